-- The top 20 items by clicks over a date range, counted from the clicks and buys themselves
-- (clickstream_kpi_clicks / _purchases: bot sessions left out, as in the daily marts). Summing
-- the per-day top lists of clickstream_popular_items instead would lose an item's clicks on
-- the days it was outside that day's list.
-- dbt compile --select kpi_clickstream_top_items --vars '{kpi_start_date: 2014-04-01, kpi_end_date: 2014-04-07}'
with clicks as (

    select * from {{ ref('clickstream_kpi_clicks') }}
    where click_date between toDate('{{ var("kpi_start_date") }}') and toDate('{{ var("kpi_end_date") }}')

),

purchases as (

    select * from {{ ref('clickstream_kpi_purchases') }}
    where purchase_date between toDate('{{ var("kpi_start_date") }}') and toDate('{{ var("kpi_end_date") }}')

),

item_events as (

    select
        item_id,
        category,
        clicked_at as event_at,
        1 as is_click,
        0 as is_purchase,
        toDecimal64(0, 2) as revenue
    from clicks

    union all

    select
        item_id,
        '' as category,
        purchased_at as event_at,
        0 as is_click,
        1 as is_purchase,
        price * quantity as revenue
    from purchases

),

final as (

    -- category: the item's latest click's in the range
    select
        item_id,
        argMaxIf(category, event_at, is_click = 1) as category,
        sum(is_click) as click_count,
        sum(is_purchase) as purchase_count,
        sum(revenue) as revenue
    from item_events
    group by item_id
    having click_count > 0

)

select * from final
order by click_count desc, item_id asc
limit 20
