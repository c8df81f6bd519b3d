{{ config(order_by='order_status') }}

-- One row per latest order status among orders that are not soft-deleted.

with orders as (

    select * from {{ ref('fct_orders') }}

),

status_counts as (

    select
        order_status,
        count() as orders,
        coalesce(sum(order_amount), 0) as order_amount
    from orders
    group by order_status

),

final as (

    select
        order_status,
        orders,
        round(orders / sum(orders) over (), 4) as order_share,
        order_amount
    from status_counts

)

select * from final
