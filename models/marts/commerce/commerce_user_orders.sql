{{ config(order_by='customer_id') }}

-- One row per customer with at least one order that is not soft-deleted (fct_orders), over all
-- days: the sales measures of commerce_daily_sales (macro order_sales_measures: every order
-- counts in orders, revenue and the average order value count the revenue-carrying ones), the
-- orders per non-revenue latest status, and the first and last order's created_at.

with orders as (

    select * from {{ ref('fct_orders') }}

),

customer_orders as (

    select
        customer_id,
        {{ order_sales_measures() }},
        countIf(order_status = 'CANCELLED') as cancelled_orders,
        countIf(order_status = 'REFUNDED') as refunded_orders,
        countIf(order_status = 'FAILED') as failed_orders,
        min(created_at) as first_order_at,
        max(created_at) as last_order_at,
        min(order_date) as first_order_date,
        max(order_date) as last_order_date
    from orders
    group by customer_id

),

final as (

    select
        customer_id,
        orders,
        revenue_orders,
        revenue,
        average_order_value,
        cancelled_orders,
        refunded_orders,
        failed_orders,
        first_order_at,
        last_order_at,
        toUInt32(dateDiff('day', first_order_date, last_order_date)) as days_between_first_and_last
    from customer_orders

)

select * from final
