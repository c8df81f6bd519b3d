{{ config(order_by='product_id') }}

-- Products sold: commerce products (from order items, with their unit price) and in-game shop
-- products (gold bundles, priced in cents of real money). One row per (product_source,
-- product_id): the two catalogs are separate, so one id can name a product in each.
-- A commerce product's name, category and current list price come from the orders service's
-- catalog (CDC, stg_oltp__products); NULL for shop products and for products it does not know.

with order_events as (

    select * from {{ ref('stg_orders__order_events') }}

),

economy_events as (

    select * from {{ ref('stg_economy__events') }}

),

catalog as (

    select
        *,
        'commerce' as product_source
    from {{ ref('stg_oltp__products') }}

),

order_items as (

    select
        JSONExtractString(item_json, 'product_id') as product_id,
        JSONExtract(item_json, 'price_cents', 'Int64') as unit_price_cents,
        ts
    from order_events
    array join JSONExtractArrayRaw(items_json) as item_json
    where event_type = 'order.created'

),

commerce_products as (

    select
        product_id,
        'commerce' as product_source,
        argMax(unit_price_cents, ts) as latest_price_cents,
        min(ts) as first_sold_at,
        count() as times_ordered
    from order_items
    group by product_id

),

shop_products as (

    select
        assumeNotNull(product_id) as product_id,
        'shop' as product_source,
        argMax(price_cents, ts) as latest_price_cents,
        min(ts) as first_sold_at,
        count() as times_ordered
    from economy_events
    where event_type = 'shop.purchase' and product_id is not null
    group by product_id

),

sold_products as (

    select * from commerce_products
    union all
    select * from shop_products

),

final as (

    select
        sold_products.*,
        catalog.product_name,
        catalog.product_category,
        catalog.price_cents as current_price_cents
    from sold_products
    left join catalog
        on
            sold_products.product_id = catalog.product_id
            and sold_products.product_source = catalog.product_source

)

select * from final
