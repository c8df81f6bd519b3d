-- Every story chapter has stages 1..10, and max_score rises with the stage number.
with stages as (

    select * from {{ ref('dim_stages') }}

),

chapters as (

    select
        chapter_number,
        count() as stage_count,
        min(stage_number) as first_stage,
        max(stage_number) as last_stage,
        arraySort(groupArray((stage_number, max_score))) as scores_by_stage
    from stages
    group by chapter_number

)

select *
from chapters
where
    stage_count != 10
    or first_stage != 1
    or last_stage != 10
    or not arrayAll(
        (current_pair, previous_pair) -> current_pair.2 > previous_pair.2,
        arrayPopFront(scores_by_stage),
        arrayPopBack(scores_by_stage)
    )
