{{ config(order_by='(user_type, cohort_date)') }}

-- One row per (user_type, cohort_date): the known users (dim_users: game/economy players and
-- commerce customers) whose first event in fct_events fell on that day, and how many of them were
-- active (had any event) on exactly day N after it, for N in 1, 3, 7, 14, 30 (the classic
-- "Day N" retention, not "on or after day N"). A day N the data has not reached yet, i.e.
-- cohort_date + N is after the last day with any event of that user_type, is NULL, not 0.
-- Bots (dim_users.is_bot) are left out of cohorts and activity while kpi_exclude_bots is true.

with human_days as (

    select * from {{ ref('engagement_user_activity_days') }}
    {%- if var('kpi_exclude_bots') %}
        where not is_bot
    {%- endif %}

),

days_since_first_seen as (

    select
        user_type,
        user_id,
        data_through_date,
        min(activity_date) over (partition by user_id) as cohort_date,
        dateDiff('day', cohort_date, activity_date) as day_number
    from human_days

),

cohorts as (

    select
        user_type,
        cohort_date,
        data_through_date,
        uniqExact(user_id) as cohort_size,
        uniqExactIf(user_id, day_number = 1) as d1_active_users,
        uniqExactIf(user_id, day_number = 3) as d3_active_users,
        uniqExactIf(user_id, day_number = 7) as d7_active_users,
        uniqExactIf(user_id, day_number = 14) as d14_active_users,
        uniqExactIf(user_id, day_number = 30) as d30_active_users
    from days_since_first_seen
    group by user_type, cohort_date, data_through_date

),

final as (

    select
        user_type,
        cohort_date,
        cohort_size,
        data_through_date,
        if(addDays(cohort_date, 1) > data_through_date, null, d1_active_users) as d1_retained_users,
        if(d1_retained_users is null, null, round(d1_retained_users / cohort_size, 4)) as d1_retention_rate,
        if(addDays(cohort_date, 3) > data_through_date, null, d3_active_users) as d3_retained_users,
        if(d3_retained_users is null, null, round(d3_retained_users / cohort_size, 4)) as d3_retention_rate,
        if(addDays(cohort_date, 7) > data_through_date, null, d7_active_users) as d7_retained_users,
        if(d7_retained_users is null, null, round(d7_retained_users / cohort_size, 4)) as d7_retention_rate,
        if(addDays(cohort_date, 14) > data_through_date, null, d14_active_users) as d14_retained_users,
        if(d14_retained_users is null, null, round(d14_retained_users / cohort_size, 4)) as d14_retention_rate,
        if(addDays(cohort_date, 30) > data_through_date, null, d30_active_users) as d30_retained_users,
        if(d30_retained_users is null, null, round(d30_retained_users / cohort_size, 4)) as d30_retention_rate
    from cohorts

)

select * from final
