{#- The sales measures of the commerce marts per grain (commerce_daily_sales by day,
    commerce_hourly_sales by hour), over fct_orders rows: orders, the revenue-carrying ones and
    their revenue (0, not null, on none), the average order value over revenue-carrying orders,
    distinct customers. -#}
{% macro order_sales_measures() -%}
    count() as orders,
    countIf(is_revenue) as revenue_orders,
    coalesce(sum(revenue), 0) as revenue,
    if(revenue_orders = 0, null, round(toFloat64(revenue) / revenue_orders, 4)) as average_order_value,
    uniqExact(customer_id) as customers
{%- endmacro %}
