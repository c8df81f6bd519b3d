{{ config(materialized='view') }}

-- The insert-time stage difficulty as it stands right now, one row per played stage of the
-- catalog: merges the aggregate states with the -Merge combinators (parts not yet merged hold
-- partial states). Includes bots: it is computed at insert time, before any bot flag exists.
-- Stages outside the catalog are left out here, as staging quarantines their events (the
-- aggregate keeps them: an insert must not read the catalog).

with stages as (

    select * from {{ ref('stg_game_catalog__stages') }}

),

stage_states as (

    select * from {{ ref('agg_game_stage_difficulty') }}
    where
        (chapter_number, stage_number) in (
            select
                stages.chapter_number,
                stages.stage_number
            from stages
        )

),

merged as (

    select
        chapter_number,
        stage_number,
        countIfMerge(attempts_state) as attempts,
        countIfMerge(clears_state) as clears,
        countIfMerge(fails_state) as fails,
        uniqExactIfMerge(players_state) as players,
        quantilesExactIfMerge(0.5, 0.9)(clear_time_quantiles_state) as clear_time_quantiles  -- noqa: LT01
    from stage_states
    group by chapter_number, stage_number

),

final as (

    select
        chapter_number,
        stage_number,
        toUInt16(chapter_number) * 100 + stage_number as stage_key,
        attempts,
        clears,
        fails,
        players,
        if(clears + fails = 0, null, round(clears / (clears + fails), 4)) as clear_rate,
        if(clears = 0, null, clear_time_quantiles[1]) as median_clear_time_ms,
        if(clears = 0, null, clear_time_quantiles[2]) as p90_clear_time_ms
    from merged

)

select * from final
