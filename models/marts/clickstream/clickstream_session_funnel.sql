{{ config(order_by='(metric_date, stage_order)') }}

-- The daily session funnel over sessions with at least one click that day:
-- 'Single View' (exactly 1 click), 'Multi View' (2 or more clicks), 'Purchase' (a click and a
-- buy that day). percentage is the stage's sessions over the sum of the three stages' (a buying
-- session counts in Purchase and in one of the views); share_of_clicking_sessions is over the
-- day's clicking sessions; drop_rate compares each stage with the one before it (0 for the first
-- stage, null when the one before is empty).

with clicks as (

    select * from {{ ref('clickstream_kpi_clicks') }}

),

purchases as (

    select * from {{ ref('clickstream_kpi_purchases') }}

),

session_day_clicks as (

    select
        click_date as metric_date,
        session_id,
        count() as clicks
    from clicks
    group by click_date, session_id

),

session_day_buys as (

    select distinct
        purchase_date as metric_date,
        session_id
    from purchases

),

clicking_sessions as (

    select
        session_day_clicks.metric_date,
        session_day_clicks.session_id,
        session_day_clicks.clicks,
        session_day_buys.session_id is not null as has_buy
    from session_day_clicks
    left join session_day_buys
        on
            session_day_clicks.metric_date = session_day_buys.metric_date
            and session_day_clicks.session_id = session_day_buys.session_id

),

stage_counts as (

    select
        metric_date,
        count() as clicking_sessions,
        countIf(clicks = 1) as single_view,
        countIf(clicks >= 2) as multi_view,
        countIf(has_buy) as purchase
    from clicking_sessions
    group by metric_date

),

stages as (

    select
        metric_date,
        clicking_sessions,
        single_view + multi_view + purchase as stage_sessions,
        stage.1 as stage_order,
        stage.2 as funnel_stage,
        stage.3 as session_count,
        stage.4 as previous_stage_count
    from stage_counts
    array join [
        (1, 'Single View', single_view, single_view),
        (2, 'Multi View', multi_view, single_view),
        (3, 'Purchase', purchase, multi_view)
    ] as stage

),

final as (

    select
        metric_date,
        stage_order,
        funnel_stage,
        session_count,
        round(100 * session_count / stage_sessions, 4) as percentage,
        round(100 * session_count / clicking_sessions, 4) as share_of_clicking_sessions,
        multiIf(
            stage_order = 1, 0,
            previous_stage_count = 0, null,
            round(100 * (1 - session_count / previous_stage_count), 4)
        ) as drop_rate
    from stages

)

select * from final
