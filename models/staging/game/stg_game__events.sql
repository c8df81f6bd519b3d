-- Puzzle game client events, one row per distinct event_id that is not quarantined, with the
-- payload's fields as columns.
-- depends_on: {{ ref('event_types') }}
-- (its registered_event_type test reads the seed; as a parent here, a failure of that test stops
-- what is built from this model, as a test on this model alone would)

{{ staged_events('game', 'base_game__events', [
    'assumeNotNull(user_id) as user_id',
    'session_id as game_session_id',
    'source_service',
    'source_host',
    'sequence as client_sequence',
    ('chapter', 'Nullable(UInt8)', 'chapter_number'),
    ('stage', 'Nullable(UInt8)', 'stage_number'),
    ('mode', 'Nullable(String)', 'game_mode'),
    ('clear_time_ms', 'Nullable(UInt32)', 'clear_time_ms'),
    ('score', 'Nullable(UInt32)', 'score'),
    ('moves', 'Nullable(UInt32)', 'moves'),
    ('wildcards_used', 'Nullable(UInt32)', 'wildcards_used'),
    ('reason', 'Nullable(String)', 'fail_reason'),
    ('elapsed_ms', 'Nullable(UInt32)', 'elapsed_ms'),
    ('item', 'Nullable(String)', 'item_name'),
    ('action', 'Nullable(String)', 'item_action'),
    ('cost_gold', 'Nullable(Int64)', 'item_cost_gold'),
    ('from_screen', 'Nullable(String)', 'from_screen'),
    ('to_screen', 'Nullable(String)', 'to_screen'),
    ('screen', 'Nullable(String)', 'screen'),
    ('platform', 'Nullable(String)', 'platform'),
    ('app_version', 'Nullable(String)', 'app_version'),
    ('duration_ms', 'Nullable(UInt64)', 'duration_ms')
]) }}
