-- One row per buy event (YOOCHOOSE buys file) that is not quarantined; a price of 0 is kept,
-- it is still a buy.
with source as (

    select * from {{ ref('base_clickstream__events') }}
    where event_type = 'clickstream.purchase' and {{ not_quarantined('clickstream') }}

),

renamed as (

    select
        event_id,
        assumeNotNull(session_id) as session_id,
        JSONExtract(payload, 'item_id', 'UInt64') as item_id,
        toDecimal64(JSONExtract(payload, 'price', 'Float64'), 2) as price,
        JSONExtract(payload, 'quantity', 'UInt32') as quantity,
        ts as purchased_at,
        toDate(ts) as purchase_date,
        ingested_at,
        loaded_at
    from source

)

select * from renamed
