{{ config(order_by='leaderboard_rank') }}

-- The time-attack leaderboard: one row per player among the top `time_attack_leaderboard_top_n`
-- by best time-attack score (the highest score of any of the player's time-attack stage clears,
-- over all days and stages). Ties are broken by who reached the score first (the earliest clear
-- with that score), then by user_id so the ranking is total. Bots (dim_users.is_bot) are left
-- out while kpi_exclude_bots is true.

with clears as (

    select * from {{ ref('stg_game__events') }}
    where
        event_type = 'game.stage_clear'
        and game_mode = 'time_attack'
        and score is not null
        and {{ not_a_bot_user('user_id') }}

),

player_bests as (

    select
        user_id,
        max(score) as best_score,
        -- the earliest clear with the best score: smallest (-score, ts, event_id)
        argMin(
            (ts, chapter_number, stage_number, clear_time_ms),
            (-toInt64(score), ts, event_id)
        ) as best_clear,
        count() as time_attack_clears
    from clears
    group by user_id

),

ranked as (

    select
        user_id,
        best_score,
        tupleElement(best_clear, 1) as achieved_at,
        tupleElement(best_clear, 2) as chapter_number,
        tupleElement(best_clear, 3) as stage_number,
        tupleElement(best_clear, 4) as clear_time_ms,
        time_attack_clears,
        row_number() over (order by best_score desc, achieved_at asc, user_id asc) as leaderboard_rank
    from player_bests

),

final as (

    select
        leaderboard_rank,
        user_id,
        best_score,
        achieved_at,
        chapter_number,
        stage_number,
        toUInt16(chapter_number) * 100 + stage_number as stage_key,
        clear_time_ms,
        time_attack_clears
    from ranked
    where leaderboard_rank <= {{ var('time_attack_leaderboard_top_n') }}

)

select * from final
