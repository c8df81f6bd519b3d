{{ config(meta={'dagster': {'ref': {'name': 'commerce_user_orders'}}}) }}
-- meta.dagster.ref: the asset this test of several relations is shown on as a Dagster check.

-- commerce_user_orders splits fct_orders by customer without losing or adding an order: one row
-- per customer of fct_orders, and its orders, revenue-carrying orders and revenue add up to
-- fct_orders' (soft-deleted orders are in neither; assert_commerce_marts_add_up ties fct_orders
-- to the other commerce marts).
with customers as (

    select
        count() as customers,
        sum(orders) as orders,
        sum(revenue_orders) as revenue_orders,
        sum(revenue) as revenue
    from {{ ref('commerce_user_orders') }}

),

orders as (

    select
        uniqExact(customer_id) as customers,
        count() as orders,
        countIf(is_revenue) as revenue_orders,
        sum(revenue) as revenue
    from {{ ref('fct_orders') }}

)

select
    customers.customers,
    orders.customers as fct_orders_customers,
    customers.orders,
    orders.orders as fct_orders_orders,
    customers.revenue_orders,
    orders.revenue_orders as fct_orders_revenue_orders,
    customers.revenue,
    orders.revenue as fct_orders_revenue
from customers
cross join orders
where
    customers.customers != orders.customers
    or customers.orders != orders.orders
    or customers.revenue_orders != orders.revenue_orders
    or coalesce(customers.revenue, 0) != coalesce(orders.revenue, 0)
