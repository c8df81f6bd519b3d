-- The top 20 items by clicks over a date range (the dashboard's /items/popular).
with item_days as (

    select * from {{ ref('clickstream_popular_items') }}
    where metric_date between toDate('{{ var("kpi_start_date") }}') and toDate('{{ var("kpi_end_date") }}')

),

final as (

    select
        item_id,
        sum(click_count) as click_count,
        sum(purchase_count) as purchase_count,
        sum(revenue) as revenue
    from item_days
    group by item_id

)

select * from final
order by click_count desc, item_id asc
limit 20
