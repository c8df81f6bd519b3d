-- The hardest stages right now, from the insert-time aggregate (no dbt run needed): clear
-- rate and clear times per stage, with the stage's grid size and par from the catalog. Bots are
-- included (they are flagged only later, by dbt); `game_stage_difficulty` is the bot-free mart.
with live_difficulty as (

    select * from {{ ref('game_stage_difficulty_live') }}

),

stages as (

    select * from {{ ref('dim_stages') }}

),

final as (

    select
        live_difficulty.chapter_number,
        live_difficulty.stage_number,
        stages.grid_size,
        stages.par_moves,
        live_difficulty.attempts,
        live_difficulty.clears,
        live_difficulty.clear_rate,
        live_difficulty.median_clear_time_ms,
        live_difficulty.p90_clear_time_ms
    from live_difficulty
    inner join stages on live_difficulty.stage_key = stages.stage_key

)

select * from final
order by clear_rate asc, chapter_number asc, stage_number asc
