{{ config(materialized='view') }}

-- The game anomalies detected live, right now: game_anomalies' columns, by the same rules
-- (macros/anomaly_rules.sql) over the clears live_stage_clears holds: one row per distinct
-- event id (its latest delivery), stages of the catalog only (staging quarantines the others).
-- detected_at is when the newest clear behind the anomaly was inserted.

with clear_deliveries as (

    select * from {{ ref('live_stage_clears') }}

),

stages as (

    select * from {{ ref('dim_stages') }}

),

latest_clears as (

    select
        user_id,
        event_id,
        argMax(game_session_id, ingested_at) as game_session_id,
        argMax(chapter_number, ingested_at) as chapter_number,
        argMax(stage_number, ingested_at) as stage_number,
        argMax(clear_time_ms, ingested_at) as clear_time_ms,
        argMax(score, ingested_at) as score,
        argMax(ts, ingested_at) as ts,
        max(inserted_at) as detected_at
    from clear_deliveries
    group by user_id, event_id

),

stage_clears as (

    {{ stage_clear_columns('latest_clears', 'detected_at') }}
    where
        (chapter_number, stage_number) in (
            select
                stages.chapter_number,
                stages.stage_number
            from stages
        )

),

{{ game_clear_anomaly_ctes() }},

final as (

    select * from game_clear_anomalies

)

select * from final
