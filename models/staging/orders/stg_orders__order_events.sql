-- Commerce order events (created, status changes, soft deletes), one row per distinct event_id
-- that is not quarantined. `version` orders the events of one order whatever order they arrived
-- in (stg_orders__quarantined_events quarantines a version used twice).
-- depends_on: {{ ref('event_types') }}
-- (its registered_event_type test reads the seed; as a parent here, a failure of that test stops
-- what is built from this model, as a test on this model alone would)

{{ staged_events('orders', 'base_orders__order_events', [
    'assumeNotNull(user_id) as customer_id',
    "JSONExtractString(payload, 'order_id') as order_id",
    ('version', 'Int64', 'order_version'),
    ('status', 'Nullable(String)', 'order_status'),
    ('previous_status', 'Nullable(String)', 'previous_status'),
    ('amount_cents', 'Nullable(Int64)', 'amount_cents'),
    ('product_ids', 'Array(String)', 'product_ids'),
    "JSONExtractRaw(payload, 'items') as items_json",
    ('deleted_by', 'Nullable(String)', 'deleted_by'),
    "parseDateTime64BestEffortOrNull(JSONExtractString(payload, 'deleted_at'), 3, 'UTC') as deleted_at",
    "cast(event_type = 'order.deleted', 'Bool') as is_delete"
]) }}
