{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        order_by='item_id',
        pre_hook="{{ delete_touched_rows('item_id', touched_items()) }}",
        post_hook="{{ record_loaded_through([ref('fct_events')]) }}"
    )
}}

-- Clickstream items: one row per item ever clicked or bought. `category` is the category of
-- the item's latest click (YOOCHOOSE marks special offers as 'S' and brands by large numbers;
-- an item can move between them); bought-but-never-clicked items have an empty category.
-- Incremental: a run recomputes the items with clicks or buys loaded since the last run (the
-- incremental manifest) or a quarantined clickstream event, from all their events; the pre-hook
-- deletes their rows first (an upsert by item).

-- It reads fct_events (the clickstream events, item_id a column: no payload is parsed) and takes
-- only the category of each item's latest click from staging, by event id (the base table's key).
with clickstream_events as (

    select * from {{ ref('fct_events') }}
    where
        domain = 'clickstream'
    {% if is_incremental() %}
        and item_id in ({{ touched_items() }})
    {% endif %}

),

item_clicks as (

    select
        assumeNotNull(item_id) as item_id,
        argMax(event_id, (ts, event_id)) as latest_click_event_id,
        min(ts) as first_clicked_at,
        max(ts) as last_clicked_at,
        count() as click_count
    from clickstream_events
    where event_type = 'clickstream.click'
    group by item_id

),

latest_clicks as (

    select
        event_id,
        category
    from {{ ref('stg_clickstream__clicks') }}
    where event_id in (select item_clicks.latest_click_event_id from item_clicks)

),

item_purchases as (

    select
        assumeNotNull(item_id) as item_id,
        min(ts) as first_purchased_at,
        max(ts) as last_purchased_at,
        count() as purchase_count,
        sum(assumeNotNull(revenue)) as revenue
    from clickstream_events
    where event_type = 'clickstream.purchase'
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
        coalesce(latest_clicks.category, '') as category,
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
    left join latest_clicks on item_clicks.latest_click_event_id = latest_clicks.event_id
    left join item_purchases using (item_id)

)

select * from final
