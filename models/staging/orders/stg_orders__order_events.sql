-- Commerce order events (created, status changes, soft deletes), one row per distinct event_id
-- that is not quarantined. `version` orders the events of one order whatever order they arrived
-- in (stg_orders__quarantined_events quarantines a version used twice).
-- depends_on: {{ ref('event_types') }}
-- (its registered_event_type test reads the seed; as a parent here, a failure of that test stops
-- what is built from this model, as a test on this model alone would)

with source as (

    select * from {{ ref('base_orders__order_events') }}
    where {{ not_quarantined('orders') }}

),

renamed as (

    select
        event_id,
        event_type,
        assumeNotNull(user_id) as customer_id,
        JSONExtractString(payload, 'order_id') as order_id,
        JSONExtract(payload, 'version', 'Int64') as order_version,
        JSONExtract(payload, 'status', 'Nullable(String)') as order_status,
        JSONExtract(payload, 'previous_status', 'Nullable(String)') as previous_status,
        JSONExtract(payload, 'amount_cents', 'Nullable(Int64)') as amount_cents,
        JSONExtract(payload, 'product_ids', 'Array(String)') as product_ids,
        JSONExtractRaw(payload, 'items') as items_json,
        JSONExtract(payload, 'deleted_by', 'Nullable(String)') as deleted_by,
        parseDateTime64BestEffortOrNull(JSONExtractString(payload, 'deleted_at'), 3, 'UTC') as deleted_at,
        cast(event_type = 'order.deleted', 'Bool') as is_delete,
        ts,
        toDate(ts) as event_date,
        ingested_at,
        loaded_at
    from source

)

select * from renamed
