{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        order_by='item_id',
        pre_hook="{{ delete_touched_rows('item_id', touched_items()) }}",
        post_hook="{{ record_loaded_through([ref('stg_clickstream__clicks'), ref('stg_clickstream__purchases')]) }}"
    )
}}

-- Clickstream items: one row per item ever clicked or bought. `category` is the category of
-- the item's latest click (YOOCHOOSE marks special offers as 'S' and brands by large numbers;
-- an item can move between them); bought-but-never-clicked items have an empty category.
-- Incremental: a run recomputes the items with clicks or buys loaded since the last run (the
-- incremental manifest) or a quarantined clickstream event, from all their events; the pre-hook
-- deletes their rows first (an upsert by item).

with clicks as (

    select * from {{ ref('stg_clickstream__clicks') }}
    {%- if is_incremental() %}
    where item_id in ({{ touched_items() }})
    {%- endif %}

),

purchases as (

    select * from {{ ref('stg_clickstream__purchases') }}
    {%- if is_incremental() %}
    where item_id in ({{ touched_items() }})
    {%- endif %}

),

item_clicks as (

    select
        item_id,
        argMax(category, (clicked_at, event_id)) as category,
        min(clicked_at) as first_clicked_at,
        max(clicked_at) as last_clicked_at,
        count() as click_count
    from clicks
    group by item_id

),

item_purchases as (

    select
        item_id,
        min(purchased_at) as first_purchased_at,
        max(purchased_at) as last_purchased_at,
        count() as purchase_count,
        sum(price * quantity) as revenue
    from purchases
    group by item_id

),

all_items as (

    select item_id from item_clicks
    union distinct
    select item_id from item_purchases

),

final as (

    select
        item_id,
        coalesce(item_clicks.category, '') as category,
        least(
            coalesce(item_clicks.first_clicked_at, item_purchases.first_purchased_at),
            coalesce(item_purchases.first_purchased_at, item_clicks.first_clicked_at)
        ) as first_seen_at,
        greatest(
            coalesce(item_clicks.last_clicked_at, item_purchases.last_purchased_at),
            coalesce(item_purchases.last_purchased_at, item_clicks.last_clicked_at)
        ) as last_seen_at,
        coalesce(item_clicks.click_count, 0) as click_count,
        coalesce(item_purchases.purchase_count, 0) as purchase_count,
        coalesce(item_purchases.revenue, 0) as revenue
    from all_items
    left join item_clicks using (item_id)
    left join item_purchases using (item_id)

)

select * from final
