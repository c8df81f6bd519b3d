{{ config(**daily_partitioned_config('metric_date', order_by='(metric_date, item_id)')) }}

-- depends_on: {{ ref('fct_events') }}  (the days new events touched: macros/partition_days.sql)

-- One row per (day, item) clicked or bought that day, bot sessions left out (as the other
-- clickstream KPI marts): clicks, buys, revenue, and the category and time of the item's latest
-- click that day ('' and null when it was only bought). The popular-items mart ranks these rows,
-- and a KPI over a date range sums them (analyses/kpi_clickstream_top_items.sql) instead of
-- reading every click. Daily partitions (macros/partition_days.sql): a run recomputes the days
-- new events touched.

with clicks as (

    select * from {{ ref('clickstream_kpi_clicks') }}
    where {{ partition_day_filter('click_date') }}

),

purchases as (

    select * from {{ ref('clickstream_kpi_purchases') }}
    where {{ partition_day_filter('purchase_date') }}

),

item_day_clicks as (

    select
        click_date as metric_date,
        item_id,
        argMax(category, (clicked_at, event_id)) as category,
        max(clicked_at) as last_clicked_at,
        count() as click_count
    from clicks
    group by click_date, item_id

),

item_day_purchases as (

    select
        purchase_date as metric_date,
        item_id,
        count() as purchase_count,
        sum(price * quantity) as revenue
    from purchases
    group by purchase_date, item_id

),

final as (

    select
        assumeNotNull(coalesce(item_day_clicks.metric_date, item_day_purchases.metric_date)) as metric_date,
        assumeNotNull(coalesce(item_day_clicks.item_id, item_day_purchases.item_id)) as item_id,
        coalesce(item_day_clicks.category, '') as category,
        item_day_clicks.last_clicked_at,
        coalesce(item_day_clicks.click_count, 0) as click_count,
        coalesce(item_day_purchases.purchase_count, 0) as purchase_count,
        coalesce(item_day_purchases.revenue, toDecimal64(0, 2)) as revenue
    from item_day_clicks
    full outer join item_day_purchases
        on
            item_day_clicks.metric_date = item_day_purchases.metric_date
            and item_day_clicks.item_id = item_day_purchases.item_id

)

select * from final
