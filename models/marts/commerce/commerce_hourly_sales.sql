{{ config(**daily_partitioned_config('order_date', order_by='order_hour')) }}

-- One row per hour (UTC, start of the hour of created_at) with at least one order that is not
-- soft-deleted; the measures of commerce_daily_sales.

with orders as (

    select * from {{ ref('fct_orders') }}
    where {{ partition_day_filter('order_date') }}

),

final as (

    select
        order_hour,
        toDate(order_hour) as order_date,
        toHour(order_hour) as hour_of_day,
        count() as orders,
        countIf(is_revenue) as revenue_orders,
        coalesce(sum(revenue), 0) as revenue,
        if(revenue_orders = 0, null, round(toFloat64(revenue) / revenue_orders, 4)) as average_order_value,
        uniqExact(customer_id) as customers
    from orders
    group by order_hour

)

select * from final
