{{ config(materialized='view') }}

-- The insert-time daily player summary as it stands right now, one row per (day, player):
-- sums the SummingMergeTree rows again because parts not yet merged hold partial sums.

with summary_parts as (

    select * from {{ ref('agg_game_daily_user_summary') }}

),

final as (

    select
        event_date,
        user_id,
        sum(event_count) as event_count,
        sum(session_count) as session_count,
        sum(stage_start_count) as stage_start_count,
        sum(stage_clear_count) as stage_clear_count,
        sum(stage_fail_count) as stage_fail_count,
        sum(item_use_count) as item_use_count,
        sum(play_time_ms) as play_time_ms
    from summary_parts
    group by event_date, user_id

)

select * from final
