{{ config(order_by='tuple()') }}

-- One row: the overall figures of orders that are not soft-deleted.

with orders as (

    select * from {{ ref('fct_orders') }}

),

final as (

    select
        count() as total_orders,
        countIf(is_revenue) as total_revenue_orders,
        coalesce(sum(revenue), 0) as total_revenue,  -- 0, not NULL, on no orders
        if(total_revenue_orders = 0, null, round(toFloat64(total_revenue) / total_revenue_orders, 4))
            as average_order_value,
        length(groupUniqArrayArray(product_ids)) as total_products,
        uniqExact(customer_id) as total_users
    from orders

)

select * from final
