-- Puzzle game client events, one row per distinct event_id that is not quarantined, with the
-- payload's fields as columns.
-- depends_on: {{ ref('event_types') }}
-- (its registered_event_type test reads the seed; as a parent here, a failure of that test stops
-- what is built from this model, as a test on this model alone would)

with source as (

    select * from {{ ref('base_game__events') }}
    where {{ not_quarantined('game') }}

),

renamed as (

    select
        event_id,
        event_type,
        assumeNotNull(user_id) as user_id,
        session_id as game_session_id,
        source_service,
        source_host,
        sequence as client_sequence,
        JSONExtract(payload, 'chapter', 'Nullable(UInt8)') as chapter_number,
        JSONExtract(payload, 'stage', 'Nullable(UInt8)') as stage_number,
        JSONExtract(payload, 'mode', 'Nullable(String)') as game_mode,
        JSONExtract(payload, 'clear_time_ms', 'Nullable(UInt32)') as clear_time_ms,
        JSONExtract(payload, 'score', 'Nullable(UInt32)') as score,
        JSONExtract(payload, 'moves', 'Nullable(UInt32)') as moves,
        JSONExtract(payload, 'wildcards_used', 'Nullable(UInt32)') as wildcards_used,
        JSONExtract(payload, 'reason', 'Nullable(String)') as fail_reason,
        JSONExtract(payload, 'elapsed_ms', 'Nullable(UInt32)') as elapsed_ms,
        JSONExtract(payload, 'item', 'Nullable(String)') as item_name,
        JSONExtract(payload, 'action', 'Nullable(String)') as item_action,
        JSONExtract(payload, 'cost_gold', 'Nullable(Int64)') as item_cost_gold,
        JSONExtract(payload, 'from_screen', 'Nullable(String)') as from_screen,
        JSONExtract(payload, 'to_screen', 'Nullable(String)') as to_screen,
        JSONExtract(payload, 'screen', 'Nullable(String)') as screen,
        JSONExtract(payload, 'platform', 'Nullable(String)') as platform,
        JSONExtract(payload, 'app_version', 'Nullable(String)') as app_version,
        JSONExtract(payload, 'duration_ms', 'Nullable(UInt64)') as duration_ms,
        ts,
        toDate(ts) as event_date,
        ingested_at,
        loaded_at
    from source

)

select * from renamed
