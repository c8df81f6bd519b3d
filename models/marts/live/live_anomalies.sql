{{ config(materialized='view') }}

-- Every anomaly of the five bot rules detected live, right now, with fct_anomalies' columns and
-- the same anomaly_id for the same anomaly (macros/anomaly_rules.sql): HIGH_FREQUENCY and
-- BOT_LIKE click windows of a session, IMPOSSIBLE_CLEAR, SCORE_OVERFLOW and RAPID_FIRE of a
-- player. Computed at insert time (models/marts/live), it holds what the live tables hold: rows
-- inserted within `live_anomaly_horizon_hours`. detected_at is when the newest row behind the
-- anomaly was inserted. The alert publisher (`eventhouse alerts`) polls it.

with live_clickstream_anomalies as (

    select * from {{ ref('live_clickstream_anomalies') }}

),

live_game_anomalies as (

    select * from {{ ref('live_game_anomalies') }}

),

unioned as (

    {{ bot_anomaly_rows('live_clickstream_anomalies', 'live_game_anomalies') }}

),

final as (

    {{ anomalies_with_ids('unioned') }}

)

select * from final
