-- One row per click event that is not quarantined. Re-delivered copies of an event (same
-- event_id) collapse into the latest delivery (base_clickstream__events); two identical
-- YOOCHOOSE lines have different event_ids and stay two.
with source as (

    select * from {{ ref('base_clickstream__events') }}
    where event_type = 'clickstream.click' and {{ not_quarantined('clickstream') }}

),

renamed as (

    select
        event_id,
        assumeNotNull(session_id) as session_id,
        JSONExtract(payload, 'item_id', 'UInt64') as item_id,
        JSONExtractString(payload, 'category') as category,
        ts as clicked_at,
        toDate(ts) as click_date,
        ingested_at,
        loaded_at
    from source

)

select * from renamed
