-- The story funnel is a funnel: story_position runs 1, 2, 3, ... without gaps, and from one
-- stage to the next players_reached_in_order and reach_rate never rise (reaching a stage in order
-- means reaching the one before it in order). reach_rate is NULL exactly when the first stage
-- has no starter, and drop_rate NULL exactly when the previous stage was reached by nobody.
with funnel as (

    select * from {{ ref('game_story_funnel') }}

),

steps as (

    select
        story_position,
        stage_key,
        players_reached_in_order,
        reach_rate,
        drop_rate,
        row_number() over (order by story_position) as row_position,
        first_value(players_started) over (order by story_position) as first_stage_players_started,
        lagInFrame(players_reached_in_order) over (
            order by story_position rows between 1 preceding and current row
        ) as previous_players_reached_in_order,
        lagInFrame(reach_rate) over (
            order by story_position rows between 1 preceding and current row
        ) as previous_reach_rate
    from funnel

)

select *
from steps
where
    story_position != row_position
    or (story_position > 1 and players_reached_in_order > previous_players_reached_in_order)
    or (story_position > 1 and reach_rate > previous_reach_rate)
    or (reach_rate is null) != (first_stage_players_started = 0)
    or (drop_rate is null) != (story_position > 1 and previous_players_reached_in_order = 0)
