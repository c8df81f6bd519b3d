{{ config(order_by='stage_key') }}

-- One row per story stage of dim_stages (all 50, unplayed ones with zero counts), over both game
-- modes and all days: attempts (stage_start events), clears, fails, players, the clear rate and
-- the exact median / p90 clear time of the clears. clear_rate = clears / (clears + fails): the
-- share of finished attempts that were cleared. Attempts are not its denominator because a clear
-- or fail whose stage_start was lost (or that a scripted client sent without one) would push
-- clears / attempts above 1, and an attempt abandoned without an outcome says nothing about the
-- stage. Bots (dim_users.is_bot) are left out while kpi_exclude_bots is true.

with stages as (

    select * from {{ ref('dim_stages') }}

),

stage_events as (

    select * from {{ ref('stg_game__events') }}
    where
        event_type in ('game.stage_start', 'game.stage_clear', 'game.stage_fail')
        and {{ not_a_bot_user('user_id') }}

),

stage_outcomes as (

    select
        toUInt16(chapter_number) * 100 + stage_number as stage_key,
        countIf(event_type = 'game.stage_start') as attempts,
        countIf(event_type = 'game.stage_clear') as clears,
        countIf(event_type = 'game.stage_fail') as fails,
        uniqExactIf(user_id, event_type = 'game.stage_start') as players,
        quantilesExactIf(0.5, 0.9)(  -- noqa: LT01
            clear_time_ms, event_type = 'game.stage_clear' and clear_time_ms is not null
        ) as clear_time_quantiles,
        countIf(event_type = 'game.stage_clear' and clear_time_ms is not null) as timed_clears
    from stage_events
    group by stage_key

),

final as (

    select
        stages.stage_key,
        stages.chapter_number,
        stages.stage_number,
        stages.stage_name,
        coalesce(stage_outcomes.attempts, 0) as attempts,
        coalesce(stage_outcomes.clears, 0) as clears,
        coalesce(stage_outcomes.fails, 0) as fails,
        coalesce(stage_outcomes.players, 0) as players,
        if(clears + fails = 0, null, round(clears / (clears + fails), 4)) as clear_rate,
        if(coalesce(stage_outcomes.timed_clears, 0) = 0, null, stage_outcomes.clear_time_quantiles[1])
            as median_clear_time_ms,
        if(coalesce(stage_outcomes.timed_clears, 0) = 0, null, stage_outcomes.clear_time_quantiles[2])
            as p90_clear_time_ms
    from stages
    left join stage_outcomes on stages.stage_key = stage_outcomes.stage_key

)

select * from final
