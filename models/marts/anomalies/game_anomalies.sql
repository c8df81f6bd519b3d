{{ config(order_by='(anomaly_type, user_id, window_start)') }}

-- Game anomalies of players' stage clears (bots are kept): IMPOSSIBLE_CLEAR, SCORE_OVERFLOW and
-- RAPID_FIRE, defined in macros/anomaly_rules.sql (game_clear_anomaly_ctes), which the live
-- detection (live_game_anomalies) shares. `detected_at` is when this build ran.

with game_events as (

    select * from {{ ref('stg_game__events') }}

),

stages as (

    select * from {{ ref('dim_stages') }}

),

stage_clears as (

    {{ stage_clear_columns('game_events', "now64(3, 'UTC')") }}
    where event_type = 'game.stage_clear'

),

{{ game_clear_anomaly_ctes() }},

final as (

    select * from game_clear_anomalies

)

select * from final
