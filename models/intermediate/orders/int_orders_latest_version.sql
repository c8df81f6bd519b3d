{{
    config(
        materialized='table',
        order_by='order_id'
    )
}}

-- One row per order ever seen, soft-deleted ones included: its latest state by order_version,
-- whatever order the events arrived in (an event that arrives late with a lower version changes
-- nothing; a delete wins when its version is the highest). The order status SCD2 snapshot and
-- the commerce marts (which leave out is_deleted orders) read this model.

with order_events as (

    select * from {{ ref('stg_orders__order_events') }}

),

-- aggregates get their own names: an alias equal to a column (order_version) would shadow it
-- inside the other aggregates
order_states as (

    select
        order_id,
        argMax(customer_id, order_version) as latest_customer_id,
        argMaxIf(order_status, order_version, order_status is not null) as latest_status,
        max(order_version) as latest_version,
        argMaxIf(amount_cents, order_version, amount_cents is not null) as latest_amount_cents,
        argMaxIf(product_ids, order_version, notEmpty(product_ids)) as latest_product_ids,
        minIfOrNull(ts, event_type = 'order.created') as order_created_at,
        min(ts) as first_event_at,
        -- one tuple: argMax of a Nullable column alone would skip the latest event's NULLs
        argMax(tuple(ts, is_delete, deleted_at, deleted_by), order_version) as latest_event
    from order_events
    group by order_id

),

final as (

    select
        order_id,
        latest_customer_id as customer_id,
        latest_status as order_status,
        latest_version as order_version,
        latest_amount_cents as amount_cents,
        latest_product_ids as product_ids,
        coalesce(order_created_at, first_event_at) as created_at,
        tupleElement(latest_event, 1) as updated_at,
        toBool(tupleElement(latest_event, 2)) as is_deleted,
        if(is_deleted, coalesce(tupleElement(latest_event, 3), updated_at), null) as deleted_at,
        if(is_deleted, tupleElement(latest_event, 4), null) as deleted_by
    from order_states

)

select * from final
