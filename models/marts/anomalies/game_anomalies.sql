{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        order_by='(anomaly_type, user_id, window_start)',
        pre_hook="{{ delete_touched_rows('user_id', touched_players()) }}",
        post_hook="{{ record_loaded_through([ref('stg_game__events')]) }}"
    )
}}

-- Game anomalies of players' stage clears (bots are kept): IMPOSSIBLE_CLEAR, SCORE_OVERFLOW and
-- RAPID_FIRE, defined in macros/anomaly_rules.sql (game_clear_anomaly_ctes), which the live
-- detection (live_game_anomalies) shares. `detected_at` is when this build ran.
-- Incremental: a player's anomalies depend on their clears only (a burst can span all of them),
-- so a run recomputes the players with game events loaded since the last run (the incremental
-- manifest) or a quarantined one; the pre-hook deletes their rows first.

with game_events as (

    select * from {{ ref('stg_game__events') }}
    {%- if is_incremental() %}
    where user_id in ({{ touched_players() }})
    {%- endif %}

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
