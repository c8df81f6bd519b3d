{{ config(**daily_partitioned_config('metric_date', order_by='metric_date')) }}

-- One row per day (UTC date of the event time) with any event: the headline KPIs that
-- kpi_anomalies scores. Days without a single event have no row.
-- - event_count: distinct events of every domain (fct_events).
-- - dau: distinct known users (game/economy players and commerce customers) with an event that
--   day; anonymous clickstream visitors have no user id and are not counted.
-- - conversion_rate: the clickstream conversion of clickstream_daily_metrics (sessions with a
--   click and a buy that day / sessions with a click that day); null on days without clicks.
-- - revenue: money as fct_events carries it (clickstream buys price x quantity, completed shop
--   purchases in real money); commerce order revenue depends on each order's latest status and
--   lives in the commerce marts.
-- When `kpi_exclude_bots` is true (default), bot users (dim_users.is_bot) and bot clickstream
-- sessions (fct_sessions.is_bot) are left out of every KPI; they stay in the data.

with events as (

    select * from {{ ref('fct_events') }}
    where
        {{ partition_day_filter('event_date') }}
        {%- if var('kpi_exclude_bots') %}
            and (user_id is null or {{ not_a_bot_user('user_id') }})
            and (domain != 'clickstream' or {{ not_a_bot_session('session_id') }})
        {%- endif %}

),

clickstream_metrics as (

    select * from {{ ref('clickstream_daily_metrics') }}
    where {{ partition_day_filter('metric_date') }}

),

daily_events as (

    select
        event_date as metric_date,
        count() as event_count,
        uniqExact(user_id) as dau,
        coalesce(sum(revenue), 0) as revenue
    from events
    group by event_date

),

final as (

    select
        daily_events.metric_date,
        daily_events.event_count,
        daily_events.dau,
        clickstream_metrics.conversion_rate,
        daily_events.revenue
    from daily_events
    left join clickstream_metrics on daily_events.metric_date = clickstream_metrics.metric_date

)

select * from final
