{{ config(**daily_partitioned_config('activity_date', order_by='(user_type, activity_date)', trailing_days=29)) }}

-- depends_on: {{ ref('fct_events') }}  (the days new events touched: macros/partition_days.sql)

-- One row per (user_type, activity_date) for every calendar day from the first to the last day
-- with any event of that user type (days without activity included, from dim_date): DAU, WAU
-- (distinct users active on any day of [d - 6, d]), MAU ([d - 29, d]) and stickiness DAU / MAU.
-- Active = any event in fct_events. Split by user_type because game/economy players and commerce
-- customers are different populations; the types never share a user, so summing over them gives
-- the all-users numbers exactly. Windows reaching before the first day of data count what there
-- is. Bots (dim_users.is_bot) are left out while kpi_exclude_bots is true.

with user_days as (

    select * from {{ ref('engagement_user_activity_days') }}

),

calendar as (

    select * from {{ ref('dim_date') }}

),

-- the days each user type's data covers (bots included: it is about the data, not the users)
data_range as (

    select distinct
        user_type,
        data_from_date,
        data_through_date
    from user_days

),

days as (

    select
        data_range.user_type,
        calendar.date_day as activity_date
    from calendar
    cross join data_range
    where
        calendar.date_day between data_range.data_from_date and data_range.data_through_date
        and {{ partition_day_filter('calendar.date_day') }}

),

human_days as (

    select * from user_days
    -- the partition days and the 29 days before them (WAU, MAU)
    where
        {{ partition_day_filter('activity_date', lookback_days=29) }}
        {%- if var('kpi_exclude_bots') %}
            and not is_bot
        {%- endif %}

),

-- each active user-day counts on that day (offset 0) and in the windows of the 29 days after it
rolling_activity as (

    select
        user_type,
        addDays(activity_date, day_offset) as activity_date,
        uniqExactIf(user_id, day_offset = 0) as dau,
        uniqExactIf(user_id, day_offset < 7) as wau,
        uniqExact(user_id) as mau
    from human_days
    array join range(30) as day_offset
    group by user_type, activity_date

),

final as (

    select
        days.user_type,
        days.activity_date,
        coalesce(rolling_activity.dau, 0) as dau,
        coalesce(rolling_activity.wau, 0) as wau,
        coalesce(rolling_activity.mau, 0) as mau,
        if(mau = 0, null, round(dau / mau, 4)) as stickiness
    from days
    left join rolling_activity
        on
            days.user_type = rolling_activity.user_type
            and days.activity_date = rolling_activity.activity_date

)

select * from final
