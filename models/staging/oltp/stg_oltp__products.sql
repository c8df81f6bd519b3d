-- The commerce product catalog as it stands in PostgreSQL now (CDC): one row per product,
-- deleted products left out (macros/cdc_current_rows.sql).

with current_rows as (

    {{ cdc_current_rows(source('oltp', 'cdc_products'), ['product_id']) }}

),

renamed as (

    select
        product_id,
        JSONExtractString(row_json, 'name') as product_name,
        JSONExtractString(row_json, 'category') as product_category,
        JSONExtract(row_json, 'price_cents', 'Int64') as price_cents,
        parseDateTime64BestEffort(JSONExtractString(row_json, 'updated_at'), 3, 'UTC') as updated_at,
        cdc_lsn,
        cdc_committed_at
    from current_rows

)

select * from renamed
