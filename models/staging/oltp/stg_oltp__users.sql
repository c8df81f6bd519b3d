-- The orders service's users as they stand in PostgreSQL now (CDC): one row per user, deleted
-- users left out (macros/cdc_current_rows.sql).

with current_rows as (

    {{ cdc_current_rows(source('oltp', 'cdc_users'), ['user_id']) }}

),

renamed as (

    select
        user_id,
        JSONExtractString(row_json, 'display_name') as display_name,
        JSONExtract(row_json, 'country', 'Nullable(String)') as country,
        parseDateTime64BestEffort(JSONExtractString(row_json, 'created_at'), 3, 'UTC') as signed_up_at,
        parseDateTime64BestEffort(JSONExtractString(row_json, 'updated_at'), 3, 'UTC') as updated_at,
        cdc_lsn,
        cdc_committed_at
    from current_rows

)

select * from renamed
