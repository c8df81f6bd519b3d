{{ config(severity='warn', meta={'dagster': {'ref': {'name': 'game_daily_user_summary_live'}}}) }}
-- meta.dagster.ref: the asset this test of several relations is shown on as a Dagster check.

-- The insert-time aggregates agree with the warehouse: per (day, player) the live daily summary
-- has the same counts as fct_events, and per stage the live stage difficulty has the same
-- attempts, clears and fails. A difference means a producer delivered an event twice (the
-- SummingMergeTree counts deliveries) or rows were inserted while an MV was created or fully
-- refreshed; it warns rather than fails because the dbt marts stay right either way.

with game_events as (

    select
        event_date,
        assumeNotNull(user_id) as user_id,
        event_type,
        stage_key
    from {{ ref('fct_events') }}
    where domain = 'game'

),

expected_daily as (

    select
        event_date,
        user_id,
        count() as event_count,
        countIf(event_type = 'game.session_start') as session_count,
        countIf(event_type = 'game.stage_start') as stage_start_count,
        countIf(event_type = 'game.stage_clear') as stage_clear_count,
        countIf(event_type = 'game.stage_fail') as stage_fail_count,
        countIf(event_type = 'game.item_use') as item_use_count
    from game_events
    group by event_date, user_id

),

live_daily as (

    select * from {{ ref('game_daily_user_summary_live') }}

),

daily_differences as (

    select
        'daily_user_summary' as aggregate_name,
        concat(
            toString(coalesce(expected_daily.event_date, live_daily.event_date)),
            ' ',
            coalesce(expected_daily.user_id, live_daily.user_id)
        ) as aggregate_key
    from expected_daily
    full outer join live_daily
        on expected_daily.event_date = live_daily.event_date and expected_daily.user_id = live_daily.user_id
    where
        expected_daily.event_count is null
        or live_daily.event_count is null
        or expected_daily.event_count != live_daily.event_count
        or expected_daily.session_count != live_daily.session_count
        or expected_daily.stage_start_count != live_daily.stage_start_count
        or expected_daily.stage_clear_count != live_daily.stage_clear_count
        or expected_daily.stage_fail_count != live_daily.stage_fail_count
        or expected_daily.item_use_count != live_daily.item_use_count

),

expected_stages as (

    select
        stage_key,
        countIf(event_type = 'game.stage_start') as attempts,
        countIf(event_type = 'game.stage_clear') as clears,
        countIf(event_type = 'game.stage_fail') as fails
    from game_events
    where event_type in ('game.stage_start', 'game.stage_clear', 'game.stage_fail')
    group by stage_key

),

live_stages as (

    select * from {{ ref('game_stage_difficulty_live') }}

),

stage_differences as (

    select
        'stage_difficulty' as aggregate_name,
        toString(coalesce(expected_stages.stage_key, live_stages.stage_key)) as aggregate_key
    from expected_stages
    full outer join live_stages on expected_stages.stage_key = live_stages.stage_key
    where
        expected_stages.attempts is null
        or live_stages.attempts is null
        or expected_stages.attempts != live_stages.attempts
        or expected_stages.clears != live_stages.clears
        or expected_stages.fails != live_stages.fails

),

final as (

    select
        aggregate_name,
        aggregate_key
    from daily_differences
    union all
    select
        aggregate_name,
        aggregate_key
    from stage_differences

)

select * from final
