{{ config(meta={'dagster': {'ref': {'name': 'commerce_daily_sales'}}}) }}
-- meta.dagster.ref: the asset this test of several relations is shown on as a Dagster check.

-- The commerce marts agree with fct_orders and with each other: the same orders and revenue
-- whether summed by day, by hour or by status, or read from commerce_stats (which has exactly
-- one row), and fct_orders holds exactly the orders of int_orders_latest_version not deleted.
-- commerce_daily_sales and commerce_hourly_sales are daily-partitioned: with the partition vars
-- (a partition run) they are compared on those days only, as their other days keep the rows of
-- their last computation.
with orders as (

    select
        count() as orders,
        sum(revenue) as revenue
    from {{ ref('fct_orders') }}

),

partition_orders as (

    select
        count() as orders,
        sum(revenue) as revenue
    from {{ ref('fct_orders') }}
    where {{ partition_day_condition('order_date') }}

),

live_orders as (

    select count() as orders
    from {{ ref('int_orders_latest_version') }}
    where not is_deleted

),

daily as (

    select
        sum(orders) as orders,
        sum(revenue) as revenue
    from {{ ref('commerce_daily_sales') }}
    where {{ partition_day_condition('order_date') }}

),

hourly as (

    select
        sum(orders) as orders,
        sum(revenue) as revenue
    from {{ ref('commerce_hourly_sales') }}
    where {{ partition_day_condition('order_date') }}

),

statuses as (

    select sum(orders) as orders
    from {{ ref('commerce_order_status_distribution') }}

),

stats as (

    select
        count() as stats_rows,
        any(total_orders) as orders,
        any(total_revenue) as revenue
    from {{ ref('commerce_stats') }}

)

select
    orders.orders,
    live_orders.orders as live_orders,
    daily.orders as daily_orders,
    hourly.orders as hourly_orders,
    statuses.orders as status_orders,
    stats.orders as stats_orders,
    stats.stats_rows
from orders
cross join partition_orders
cross join live_orders
cross join daily
cross join hourly
cross join statuses
cross join stats
where
    stats.stats_rows != 1
    or live_orders.orders != orders.orders
    or daily.orders != partition_orders.orders
    or hourly.orders != partition_orders.orders
    or statuses.orders != orders.orders
    or stats.orders != orders.orders
    or coalesce(daily.revenue, 0) != coalesce(partition_orders.revenue, 0)
    or coalesce(hourly.revenue, 0) != coalesce(partition_orders.revenue, 0)
    or coalesce(stats.revenue, 0) != coalesce(orders.revenue, 0)
