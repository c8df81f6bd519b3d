{{ config(**daily_partitioned_config('metric_date', order_by='(metric_date, category)')) }}

-- depends_on: {{ ref('fct_events') }}  (the days new events touched: macros/partition_days.sql)

-- The top `popular_categories_top_n` (20) categories per day by clicks (then category name).
-- Buys carry no category in the YOOCHOOSE layout: a buy counts for its item's category in
-- dim_items (the item's latest click overall).

with clicks as (

    select * from {{ ref('clickstream_kpi_clicks') }}
    where {{ partition_day_filter('click_date') }}

),

purchases as (

    select * from {{ ref('clickstream_kpi_purchases') }}
    where {{ partition_day_filter('purchase_date') }}

),

items as (

    select * from {{ ref('dim_items') }}

),

category_day_clicks as (

    select
        click_date as metric_date,
        category,
        count() as click_count,
        uniqExact(item_id) as unique_items,
        uniqExact(session_id) as unique_sessions
    from clicks
    group by click_date, category

),

category_day_purchases as (

    select
        purchases.purchase_date as metric_date,
        items.category,
        count() as purchase_count,
        sum(purchases.price * purchases.quantity) as revenue
    from purchases
    inner join items on purchases.item_id = items.item_id
    group by purchases.purchase_date, items.category

),

ranked as (

    select
        category_day_clicks.metric_date,
        category_day_clicks.category,
        category_day_clicks.click_count,
        category_day_clicks.unique_items,
        category_day_clicks.unique_sessions,
        coalesce(category_day_purchases.purchase_count, 0) as purchase_count,
        coalesce(category_day_purchases.revenue, toDecimal64(0, 2)) as revenue,
        row_number() over (
            partition by category_day_clicks.metric_date
            order by category_day_clicks.click_count desc, category_day_clicks.category asc
        ) as category_rank
    from category_day_clicks
    left join category_day_purchases
        on
            category_day_clicks.metric_date = category_day_purchases.metric_date
            and category_day_clicks.category = category_day_purchases.category

),

final as (

    select * from ranked
    where category_rank <= {{ var('popular_categories_top_n') }}

)

select * from final
