{{ config(order_by='(order_date, order_id)') }}

{%- set non_revenue_statuses -%}
    ('{{ var('commerce_non_revenue_statuses') | join("', '") }}')
{%- endset %}

-- One row per order that is not soft-deleted: its latest state by version. Revenue is the
-- order amount unless the latest status is one of commerce_non_revenue_statuses.

with orders as (

    select * from {{ ref('int_orders_latest_version') }}
    where not is_deleted

),

final as (

    select
        order_id,
        customer_id,
        -- an order that is not deleted has a non-delete latest event, and every such event carries
        -- a status (accepted_values tests that no '' slips through)
        assumeNotNull(order_status) as order_status,
        order_version,
        amount_cents,
        toDecimal64(amount_cents, 2) / 100 as order_amount,
        toBool(order_status not in {{ non_revenue_statuses }}) as is_revenue,
        if(is_revenue, order_amount, toDecimal64(0, 2)) as revenue,
        product_ids,
        length(product_ids) as product_count,
        created_at,
        toDate(created_at) as order_date,
        toStartOfHour(created_at) as order_hour,
        updated_at
    from orders

)

select * from final
