{{ config(order_by='stage_key') }}

with stages as (

    select * from {{ ref('stg_game_catalog__stages') }}

),

chapter_totals as (

    select
        chapter_number,
        count() as stages_in_chapter,
        sum(max_score) as chapter_max_score
    from stages
    group by chapter_number

),

final as (

    select
        stages.stage_key,
        stages.chapter_number,
        stages.stage_number,
        concat('Chapter ', toString(stages.chapter_number), ' - Stage ', toString(stages.stage_number)) as stage_name,
        stages.grid_size,
        stages.par_moves,
        stages.max_score,
        chapter_totals.stages_in_chapter,
        chapter_totals.chapter_max_score,
        stages.stage_number = chapter_totals.stages_in_chapter as is_chapter_finale
    from stages
    inner join chapter_totals on stages.chapter_number = chapter_totals.chapter_number

)

select * from final
