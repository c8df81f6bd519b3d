{{
    config(
        materialized='materialized_view',
        settings=insert_time_table_settings(),
        engine='AggregatingMergeTree()',
        on_schema_change='append_new_columns',
        order_by='(chapter_number, stage_number)'
    )
}}

-- Insert-time aggregate (dbt-clickhouse `materialized_view`): per stage, aggregate-function
-- states that the view `agg_game_stage_difficulty_mv` adds for every block inserted into the raw
-- game table. Read it through `game_stage_difficulty_live` (the -Merge combinators), never
-- directly. Attempts, clears, fails and the clear-time quantiles are over deliveries, like the
-- daily summary (a batch the loader retries is dropped by the table's deduplication window; an event a producer sent
-- twice counts twice); players is an exact distinct count. Counts rather than uniqExact of the
-- event ids keep the states small: at 10M events, merging uniqExact states of ~3M event ids
-- made the live query take 80-170 ms. Quarantined events (macros/quarantine.sql: an unknown mode,
-- a negative clear time, ...) are left out, as in the dbt marts; stages outside the catalog are
-- kept here (an insert must not read the catalog) and left out by game_stage_difficulty_live.

select
    JSONExtract(payload, 'chapter', 'UInt8') as chapter_number,
    JSONExtract(payload, 'stage', 'UInt8') as stage_number,
    countIfState(event_type = 'game.stage_start') as attempts_state,
    countIfState(event_type = 'game.stage_clear') as clears_state,
    countIfState(event_type = 'game.stage_fail') as fails_state,
    uniqExactIfState(user_id, event_type = 'game.stage_start') as players_state,
    quantilesExactIfState(0.5, 0.9)(  -- noqa: LT01
        JSONExtract(payload, 'clear_time_ms', 'UInt32'), event_type = 'game.stage_clear'
    ) as clear_time_quantiles_state
from {{ source('raw', 'raw_game_events') }}
where
    event_type in ('game.stage_start', 'game.stage_clear', 'game.stage_fail')
    and empty({{ game_quarantine_reasons(stage_catalog=false) }})
group by chapter_number, stage_number
