{{ config(materialized='view') }}

-- The clicks the clickstream KPI marts count: stg_clickstream__clicks without the sessions a bot
-- anomaly flagged (var `bot_anomaly_types`, macros/exclude_bots.sql; all of a session's clicks
-- leave, not only those in the flagged window). With var kpi_exclude_bots false, every click.

with clicks as (

    select * from {{ ref('stg_clickstream__clicks') }}
    where {{ not_a_bot_session('session_id') }}

)

select
    event_id,
    session_id,
    item_id,
    category,
    clicked_at,
    click_date,
    ingested_at,
    loaded_at
from clicks
