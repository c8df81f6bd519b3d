{{ config(order_by='(user_type, cohort_week, weeks_since_first_seen)') }}

-- The weekly cohort matrix: one row per (user_type, cohort_week, weeks_since_first_seen). A
-- cohort is the known users whose first event in fct_events fell in the week (Monday to Sunday)
-- starting cohort_week; week k is the k-th week after it, and its active users are the cohort's
-- users with any event in that week. Every week from 0 up to the week holding the last day with
-- any event of the user type is present, weeks with no active user included (0, not missing).
-- The last week may be only partly observed (is_complete_week). Bots (dim_users.is_bot) are
-- left out while kpi_exclude_bots is true.

with human_days as (

    select * from {{ ref('engagement_user_activity_days') }}
    {%- if var('kpi_exclude_bots') %}
        where not is_bot
    {%- endif %}

),

activity_weeks as (

    select
        user_type,
        user_id,
        data_through_date,
        toMonday(min(activity_date) over (partition by user_id)) as cohort_week,
        toUInt32(intDiv(dateDiff('day', cohort_week, activity_date), 7)) as weeks_since_first_seen
    from human_days

),

cohort_sizes as (

    select
        user_type,
        cohort_week,
        data_through_date,
        uniqExact(user_id) as cohort_size
    from activity_weeks
    group by user_type, cohort_week, data_through_date

),

-- weeks 0 up to the week holding the user type's last day with data
cohort_spans as (

    select
        user_type,
        cohort_week,
        cohort_size,
        data_through_date,
        toUInt32(intDiv(dateDiff('day', cohort_week, toMonday(data_through_date)), 7) + 1) as weeks_reached
    from cohort_sizes

),

cohort_weeks as (

    select
        user_type,
        cohort_week,
        cohort_size,
        data_through_date,
        weeks_since_first_seen
    from cohort_spans
    array join range(weeks_reached) as weeks_since_first_seen

),

weekly_activity as (

    select
        user_type,
        cohort_week,
        weeks_since_first_seen,
        uniqExact(user_id) as active_users
    from activity_weeks
    group by user_type, cohort_week, weeks_since_first_seen

),

final as (

    select
        cohort_weeks.user_type,
        cohort_weeks.cohort_week,
        cohort_weeks.weeks_since_first_seen,
        addDays(cohort_weeks.cohort_week, 7 * cohort_weeks.weeks_since_first_seen) as week_start_date,
        cohort_weeks.cohort_size,
        coalesce(weekly_activity.active_users, 0) as active_users,
        round(active_users / cohort_weeks.cohort_size, 4) as retention_rate,
        toBool(addDays(week_start_date, 6) <= cohort_weeks.data_through_date) as is_complete_week
    from cohort_weeks
    left join weekly_activity
        on
            cohort_weeks.user_type = weekly_activity.user_type
            and cohort_weeks.cohort_week = weekly_activity.cohort_week
            and cohort_weeks.weeks_since_first_seen = weekly_activity.weeks_since_first_seen

)

select * from final
