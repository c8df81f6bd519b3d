{{ config(**daily_partitioned_config('event_date', order_by='(event_date, user_id)')) }}

-- depends_on: {{ ref('fct_events') }}  (the days new events touched: macros/partition_days.sql)

-- One row per (event_date, user_id) with any game event that day (UTC date of the event's ts):
-- distinct game events by type, play time and the best score. The same measures as the
-- insert-time SummingMergeTree (agg_game_daily_user_summary), computed from the deduplicated
-- events. A per-player fact table, not a KPI: bots stay in, flagged by is_bot (dim_users).

with game_events as (

    select * from {{ ref('stg_game__events') }}
    where {{ partition_day_filter('event_date') }}

),

users as (

    select * from {{ ref('dim_users') }}

),

player_days as (

    select
        event_date,
        user_id,
        count() as event_count,
        countIf(event_type = 'game.session_start') as session_count,
        countIf(event_type = 'game.stage_start') as stage_start_count,
        countIf(event_type = 'game.stage_clear') as stage_clear_count,
        countIf(event_type = 'game.stage_fail') as stage_fail_count,
        countIf(event_type = 'game.item_use') as item_use_count,
        toUInt64(coalesce(sumIf(duration_ms, event_type = 'game.session_end'), 0)) as play_time_ms,
        maxIf(score, event_type = 'game.stage_clear') as best_score
    from game_events
    group by event_date, user_id

),

final as (

    select
        player_days.event_date,
        player_days.user_id,
        player_days.event_count,
        player_days.session_count,
        player_days.stage_start_count,
        player_days.stage_clear_count,
        player_days.stage_fail_count,
        player_days.item_use_count,
        player_days.play_time_ms,
        player_days.best_score,
        toBool(coalesce(users.is_bot, false)) as is_bot
    from player_days
    left join users on player_days.user_id = users.user_id

)

select * from final
