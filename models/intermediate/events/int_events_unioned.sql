-- One row per distinct event of every domain (clickstream clicks and buys, game, economy,
-- orders) that is not quarantined, in conformed columns. fct_events, the session events and
-- dim_users read it. A new domain is one more entry in `branches` (the staging model and the
-- expressions of the columns it has; the others are null).

{%- set columns = [
    ('event_id', none),
    ('event_type', none),
    ('domain', none),
    ('user_id', 'Nullable(String)'),
    ('session_id', 'Nullable(String)'),
    ('item_id', 'Nullable(UInt64)'),
    ('product_id', 'Nullable(String)'),
    ('stage_key', 'Nullable(UInt16)'),
    ('order_id', 'Nullable(String)'),
    ('is_purchase', 'UInt8'),
    ('revenue', 'Nullable(Decimal64(2))'),
    ('clear_time_ms', 'Nullable(UInt32)'),
    ('score', 'Nullable(UInt32)'),
    ('ts', none),
    ('ingested_at', none),
    ('loaded_at', none),
] %}

{%- set completed_shop_purchase = "event_type = 'shop.purchase' and purchase_status = 'completed'" %}

{%- set branches = [
    {
        'model': 'stg_clickstream__clicks',
        'event_type': "'clickstream.click'",
        'domain': "'clickstream'",
        'session_id': 'session_id',
        'item_id': 'item_id',
        'is_purchase': '0',
        'ts': 'clicked_at',
    },
    {
        'model': 'stg_clickstream__purchases',
        'event_type': "'clickstream.purchase'",
        'domain': "'clickstream'",
        'session_id': 'session_id',
        'item_id': 'item_id',
        'is_purchase': '1',
        'revenue': 'price * quantity',
        'ts': 'purchased_at',
    },
    {
        'model': 'stg_game__events',
        'domain': "'game'",
        'user_id': 'user_id',
        'session_id': 'game_session_id',
        'stage_key': 'toUInt16(chapter_number) * 100 + stage_number',
        'is_purchase': '0',
        'clear_time_ms': 'clear_time_ms',
        'score': 'score',
    },
    {
        'model': 'stg_economy__events',
        'domain': "'economy'",
        'user_id': 'user_id',
        'session_id': 'game_session_id',
        'product_id': 'product_id',
        'is_purchase': 'coalesce(' ~ completed_shop_purchase ~ ', 0)',
        'revenue': 'if(' ~ completed_shop_purchase ~ ', toDecimal64(price_cents, 2) / 100, null)',
    },
    {
        'model': 'stg_orders__order_events',
        'domain': "'orders'",
        'user_id': 'customer_id',
        'order_id': 'order_id',
        'is_purchase': '0',
    },
] %}

-- (economy revenue: decimal arithmetic, as price_cents / 100 would go through a float and lose
-- cents; a completed purchase without a price is a purchase with null revenue)
with unioned as (
    {{ union_conformed(columns, branches) }}

)

select * from unioned
