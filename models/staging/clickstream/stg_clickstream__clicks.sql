-- One row per click event. FINAL collapses re-delivered copies of an event (same event_id)
-- into the latest delivery; two identical YOOCHOOSE lines have different event_ids and stay two.
with source as (

    select * from {{ deduplicated(source('raw', 'raw_clickstream_events')) }}
    where event_type = 'clickstream.click'

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
