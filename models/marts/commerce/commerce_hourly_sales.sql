{{ config(**daily_partitioned_config('order_date', order_by='order_hour', touched_days=false)) }}

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
        {{ order_sales_measures() }}
    from orders
    group by order_hour

)

select * from final
