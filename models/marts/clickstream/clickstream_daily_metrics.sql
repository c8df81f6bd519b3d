{{ config(**daily_partitioned_config('metric_date', order_by='metric_date')) }}

-- depends_on: {{ ref('fct_events') }}  (the days new events touched: macros/partition_days.sql)

-- Daily clickstream KPIs. A day is the UTC date of each event's own timestamp; a session that
-- spans midnight counts on both days with that day's events only. Daily partitions: a run with
-- partition_start_date/partition_end_date reads and replaces only those days
-- (macros/partition_days.sql).

with clicks as (

    select * from {{ ref('clickstream_kpi_clicks') }}
    where {{ partition_day_filter('click_date') }}

),

purchases as (

    select * from {{ ref('clickstream_kpi_purchases') }}
    where {{ partition_day_filter('purchase_date') }}

),

session_day_events as (

    select
        click_date as metric_date,
        session_id,
        clicked_at as event_at,
        1 as is_click,
        0 as is_buy,
        toDecimal64(0, 2) as revenue
    from clicks

    union all

    select
        purchase_date as metric_date,
        session_id,
        purchased_at as event_at,
        0 as is_click,
        1 as is_buy,
        price * quantity as revenue
    from purchases

),

session_days as (

    select
        metric_date,
        session_id,
        sum(is_click) as clicks,
        sum(is_buy) as buys,
        sum(revenue) as revenue,
        dateDiff('millisecond', min(event_at), max(event_at)) / 1000 as duration_sec
    from session_day_events
    group by metric_date, session_id

),

click_days as (

    select
        click_date as metric_date,
        count() as total_clicks,
        uniqExact(item_id) as unique_items
    from clicks
    group by click_date

),

daily as (

    select
        metric_date,
        sum(buys) as total_purchases,
        countIf(clicks > 0) as unique_sessions,
        countIf(clicks > 0 and buys > 0) as converted_sessions,
        countIf(buys > 0) as buying_sessions,
        avg(duration_sec) as avg_session_duration_sec,
        sum(revenue) as total_revenue
    from session_days
    group by metric_date

),

final as (

    select
        daily.metric_date,
        coalesce(click_days.total_clicks, 0) as total_clicks,
        daily.total_purchases,
        daily.unique_sessions,
        coalesce(click_days.unique_items, 0) as unique_items,
        if(daily.unique_sessions = 0, null, daily.converted_sessions / daily.unique_sessions) as conversion_rate,
        daily.avg_session_duration_sec,
        if(daily.unique_sessions = 0, null, coalesce(click_days.total_clicks, 0) / daily.unique_sessions)
            as avg_clicks_per_session,
        daily.total_revenue,
        if(daily.total_purchases = 0, null, daily.total_revenue / daily.total_purchases) as avg_order_value,
        if(daily.buying_sessions = 0, null, daily.total_revenue / daily.buying_sessions)
            as revenue_per_buying_session
    from daily
    left join click_days on daily.metric_date = click_days.metric_date

)

select * from final
