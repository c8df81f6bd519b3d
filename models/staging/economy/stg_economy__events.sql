-- Game economy events (auth, live events, missions, rewards, shop, game sessions), one row per
-- distinct event_id that is not quarantined, with the payload's fields as columns.
-- depends_on: {{ ref('event_types') }}
-- (its registered_event_type test reads the seed; as a parent here, a failure of that test stops
-- what is built from this model, as a test on this model alone would)

{{ staged_events('economy', 'base_economy__events', [
    'assumeNotNull(user_id) as user_id',
    'session_id as game_session_id',
    'source_service',
    'dedupe_key',
    ('country', 'Nullable(String)', 'country'),
    ('platform', 'Nullable(String)', 'platform'),
    ('persona', 'Nullable(String)', 'declared_persona'),
    ('live_event_id', 'Nullable(String)', 'live_event_id'),
    ('mission_id', 'Nullable(String)', 'mission_id'),
    ('progress_version', 'Nullable(Int64)', 'progress_version'),
    ('progress', 'Nullable(Int64)', 'progress'),
    ('reward_gold', 'Nullable(Int64)', 'reward_gold'),
    ('delta_gold', 'Nullable(Int64)', 'delta_gold'),
    ('balance', 'Nullable(Int64)', 'balance_gold'),
    ('reason', 'Nullable(String)', 'reward_reason'),
    ('tx_id', 'Nullable(String)', 'tx_id'),
    ('status', 'Nullable(String)', 'purchase_status'),
    ('product_id', 'Nullable(String)', 'product_id'),
    ('amount_gold', 'Nullable(Int64)', 'amount_gold'),
    ('price_cents', 'Nullable(Int64)', 'price_cents'),
    ('action', 'Nullable(String)', 'session_action'),
    ('duration_ms', 'Nullable(UInt64)', 'duration_ms')
]) }}
