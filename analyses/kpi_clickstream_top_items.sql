-- The top 20 items by clicks over a date range, summed from clickstream_item_days (every item
-- clicked or bought each day, bot sessions left out, as in the daily marts). Summing the per-day
-- top lists of clickstream_popular_items instead would lose an item's clicks on the days it was
-- outside that day's list; reading the clicks themselves would cost as much as the range's clicks.
-- dbt compile --select kpi_clickstream_top_items --vars '{kpi_start_date: 2014-04-01, kpi_end_date: 2014-04-07}'
with item_days as (

    select * from {{ ref('clickstream_item_days') }}
    where metric_date between toDate('{{ var("kpi_start_date") }}') and toDate('{{ var("kpi_end_date") }}')

),

final as (

    -- category: the item's latest click's in the range (the day of its latest click)
    select
        item_days.item_id,
        argMaxIf(item_days.category, item_days.last_clicked_at, item_days.last_clicked_at is not null) as category,
        sum(item_days.click_count) as click_count,
        sum(item_days.purchase_count) as purchase_count,
        sum(item_days.revenue) as revenue
    from item_days
    group by item_days.item_id
    having click_count > 0

)

select * from final
order by click_count desc, item_id asc
limit 20
