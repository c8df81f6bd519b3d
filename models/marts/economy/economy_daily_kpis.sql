{{ config(**daily_partitioned_config('metric_date', order_by='metric_date', trailing_days=6)) }}

-- One row per day (UTC date of the event's ts) with any player activity in the game or the
-- economy. Revenue is completed shop purchases (price_cents / 100); bots are left out when
-- kpi_exclude_bots is true.

with events as (

    select * from {{ ref('fct_events') }}
    where
        domain in ('game', 'economy')
        -- the partition days and the 6 days before them (active_users_7d)
        and {{ partition_day_filter('event_date', lookback_days=6) }}
        and user_id is not null
        and {{ not_a_bot_user('user_id') }}

),

economy_events as (

    select * from {{ ref('stg_economy__events') }}
    where
        event_type = 'shop.purchase'
        and {{ partition_day_filter('event_date') }}
        and purchase_status = 'completed'
        and {{ not_a_bot_user('user_id') }}

),

user_days as (

    select distinct
        event_date as metric_date,
        assumeNotNull(user_id) as user_id
    from events

),

daily_activity as (

    select
        metric_date,
        count() as dau
    from user_days
    where {{ partition_day_filter('metric_date') }}
    group by metric_date

),

-- each active user-day counts on that day and the 6 days after it
rolling_activity as (

    select
        addDays(metric_date, day_offset) as metric_date,
        uniqExact(user_id) as active_users_7d
    from user_days
    array join range(7) as day_offset
    group by metric_date

),

daily_purchases as (

    select
        event_date as metric_date,
        uniqExact(user_id) as paying_users,
        count() as purchases,
        toDecimal64(sum(coalesce(price_cents, 0)), 2) / 100 as revenue,
        sum(coalesce(amount_gold, 0)) as gold_sold
    from economy_events
    group by event_date

),

-- (one join per CTE: ClickHouse keeps `table.column` names on a select over several joins)
activity as (

    select
        daily_activity.metric_date,
        daily_activity.dau,
        -- every active day is in its own 7-day window, so the join always matches
        assumeNotNull(rolling_activity.active_users_7d) as active_users_7d
    from daily_activity
    left join rolling_activity on daily_activity.metric_date = rolling_activity.metric_date

),

final as (

    select
        activity.metric_date,
        activity.dau,
        activity.active_users_7d,
        coalesce(daily_purchases.paying_users, 0) as paying_users,
        coalesce(daily_purchases.purchases, 0) as purchases,
        coalesce(daily_purchases.gold_sold, 0) as gold_sold,
        coalesce(daily_purchases.revenue, toDecimal64(0, 2)) as revenue,
        round(toFloat64(revenue) / activity.dau, 4) as arpdau,
        if(paying_users = 0, null, round(toFloat64(revenue) / paying_users, 4)) as arppu,
        round(paying_users / activity.dau, 4) as paying_share
    from activity
    left join daily_purchases on activity.metric_date = daily_purchases.metric_date

)

select * from final
