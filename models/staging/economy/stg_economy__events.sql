-- Game economy events (auth, live events, missions, rewards, shop, game sessions), one row per
-- distinct event_id that is not quarantined, with the payload's fields as columns.
-- depends_on: {{ ref('event_types') }}
-- (its registered_event_type test reads the seed; as a parent here, a failure of that test stops
-- what is built from this model, as a test on this model alone would)

with source as (

    select * from {{ ref('base_economy__events') }}
    where {{ not_quarantined('economy') }}

),

renamed as (

    select
        event_id,
        event_type,
        assumeNotNull(user_id) as user_id,
        session_id as game_session_id,
        source_service,
        dedupe_key,
        JSONExtract(payload, 'country', 'Nullable(String)') as country,
        JSONExtract(payload, 'platform', 'Nullable(String)') as platform,
        JSONExtract(payload, 'persona', 'Nullable(String)') as declared_persona,
        JSONExtract(payload, 'live_event_id', 'Nullable(String)') as live_event_id,
        JSONExtract(payload, 'mission_id', 'Nullable(String)') as mission_id,
        JSONExtract(payload, 'progress_version', 'Nullable(Int64)') as progress_version,
        JSONExtract(payload, 'progress', 'Nullable(Int64)') as progress,
        JSONExtract(payload, 'reward_gold', 'Nullable(Int64)') as reward_gold,
        JSONExtract(payload, 'delta_gold', 'Nullable(Int64)') as delta_gold,
        JSONExtract(payload, 'balance', 'Nullable(Int64)') as balance_gold,
        JSONExtract(payload, 'reason', 'Nullable(String)') as reward_reason,
        JSONExtract(payload, 'tx_id', 'Nullable(String)') as tx_id,
        JSONExtract(payload, 'status', 'Nullable(String)') as purchase_status,
        JSONExtract(payload, 'product_id', 'Nullable(String)') as product_id,
        JSONExtract(payload, 'amount_gold', 'Nullable(Int64)') as amount_gold,
        JSONExtract(payload, 'price_cents', 'Nullable(Int64)') as price_cents,
        JSONExtract(payload, 'action', 'Nullable(String)') as session_action,
        JSONExtract(payload, 'duration_ms', 'Nullable(UInt64)') as duration_ms,
        ts,
        toDate(ts) as event_date,
        ingested_at,
        loaded_at
    from source

)

select * from renamed
