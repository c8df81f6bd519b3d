{{ config(**daily_partitioned_config('metric_date', order_by='(metric_date, item_id)')) }}

-- depends_on: {{ ref('fct_events') }}  (the days new events touched: macros/partition_days.sql)

-- Items per day that rank in the top `popular_items_top_n` (100) by clicks (click_count desc,
-- then item_id) or by revenue (revenue desc, click_count desc, item_id). category is the
-- category of the item's latest click that day ('' when it was only bought). Daily partitions
-- (macros/partition_days.sql): a run recomputes the days new events touched.

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

item_days as (

    select
        assumeNotNull(coalesce(item_day_clicks.metric_date, item_day_purchases.metric_date)) as metric_date,
        assumeNotNull(coalesce(item_day_clicks.item_id, item_day_purchases.item_id)) as item_id,
        coalesce(item_day_clicks.category, '') as category,
        coalesce(item_day_clicks.click_count, 0) as click_count,
        coalesce(item_day_purchases.purchase_count, 0) as purchase_count,
        coalesce(item_day_purchases.revenue, toDecimal64(0, 2)) as revenue
    from item_day_clicks
    full outer join item_day_purchases
        on
            item_day_clicks.metric_date = item_day_purchases.metric_date
            and item_day_clicks.item_id = item_day_purchases.item_id

),

ranked as (

    select
        *,
        row_number() over (
            partition by metric_date order by click_count desc, item_id asc
        ) as click_rank,
        row_number() over (
            partition by metric_date order by revenue desc, click_count desc, item_id asc
        ) as revenue_rank,
        if(click_count = 0, null, round(purchase_count / click_count, 6)) as click_to_purchase_ratio
    from item_days

),

final as (

    select
        metric_date,
        item_id,
        category,
        click_count,
        purchase_count,
        revenue,
        click_rank,
        revenue_rank,
        click_to_purchase_ratio
    from ranked
    where
        click_rank <= {{ var('popular_items_top_n') }}
        or revenue_rank <= {{ var('popular_items_top_n') }}

)

select * from final
