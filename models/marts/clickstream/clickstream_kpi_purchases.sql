{{ config(materialized='view') }}

-- The buys the clickstream KPI marts count: stg_clickstream__purchases without the sessions a bot
-- anomaly flagged (var `bot_anomaly_types`, macros/exclude_bots.sql). With var kpi_exclude_bots
-- false, every buy.

with purchases as (

    select * from {{ ref('stg_clickstream__purchases') }}
    where {{ not_a_bot_session('session_id') }}

)

select
    event_id,
    session_id,
    item_id,
    price,
    quantity,
    purchased_at,
    purchase_date,
    ingested_at,
    loaded_at
from purchases
