{{ config(**daily_partitioned_config('order_date', order_by='order_date', touched_days=false)) }}

-- One row per order date (UTC date of created_at) with at least one order that is not
-- soft-deleted. Revenue and the average order value count revenue-carrying orders only.

with orders as (

    select * from {{ ref('fct_orders') }}
    where {{ partition_day_filter('order_date') }}

),

final as (

    select
        order_date,
        {{ order_sales_measures() }}
    from orders
    group by order_date

)

select * from final
