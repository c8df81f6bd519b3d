{{ config(**daily_partitioned_config('order_date', order_by='order_date')) }}

-- One row per order date (UTC date of created_at) with at least one order that is not
-- soft-deleted. Revenue and the average order value count revenue-carrying orders only.

with orders as (

    select * from {{ ref('fct_orders') }}
    where {{ partition_day_filter('order_date') }}

),

final as (

    select
        order_date,
        count() as orders,
        countIf(is_revenue) as revenue_orders,
        coalesce(sum(revenue), 0) as revenue,
        if(revenue_orders = 0, null, round(toFloat64(revenue) / revenue_orders, 4)) as average_order_value,
        uniqExact(customer_id) as customers
    from orders
    group by order_date

)

select * from final
