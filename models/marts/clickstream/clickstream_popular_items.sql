{{ config(**daily_partitioned_config('metric_date', order_by='(metric_date, item_id)')) }}

-- depends_on: {{ ref('fct_events') }}  (the days new events touched: macros/partition_days.sql)

-- Items per day that rank in the top `popular_items_top_n` (100) by clicks (click_count desc,
-- then item_id) or by revenue (revenue desc, click_count desc, item_id). category is the
-- category of the item's latest click that day ('' when it was only bought), from
-- clickstream_item_days. Daily partitions (macros/partition_days.sql): a run recomputes the days
-- new events touched.

with item_days as (

    select * from {{ ref('clickstream_item_days') }}
    where {{ partition_day_filter('metric_date') }}

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
