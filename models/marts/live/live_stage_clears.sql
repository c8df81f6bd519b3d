{{
    config(
        materialized='materialized_view',
        settings=insert_time_table_settings(),
        engine='ReplacingMergeTree(ingested_at)',
        order_by='(user_id, event_id)',
        ttl='toDateTime(inserted_at) + INTERVAL ' ~ var('live_anomaly_horizon_hours') ~ ' HOUR'
    )
}}

-- Live detection of the game rules, at insert time (dbt-clickhouse `materialized_view`): the
-- view `live_stage_clears_mv` copies every stage clear the loader inserts into the raw game
-- table here (a few columns; clears are a small share of game events). live_game_anomalies
-- applies the batch mart's rules to them when read. Re-deliveries collapse by event id (the
-- latest by ingested_at, as in staging). Quarantined clears are left out as in staging, except
-- a stage outside the catalog (an insert does not read the catalog: the live view drops those)
-- and an event id used in another domain. A clear expires `live_anomaly_horizon_hours` after it
-- was inserted.

select
    event_id,
    assumeNotNull(user_id) as user_id,
    session_id as game_session_id,
    JSONExtract(payload, 'chapter', 'Nullable(UInt8)') as chapter_number,
    JSONExtract(payload, 'stage', 'Nullable(UInt8)') as stage_number,
    JSONExtract(payload, 'clear_time_ms', 'Nullable(UInt32)') as clear_time_ms,
    JSONExtract(payload, 'score', 'Nullable(UInt32)') as score,
    ts,
    ingested_at,
    now64(3, 'UTC') as inserted_at
from {{ source('raw', 'raw_game_events') }}
where
    event_type = 'game.stage_clear'
    and empty({{ game_quarantine_reasons(stage_catalog=false) }})
