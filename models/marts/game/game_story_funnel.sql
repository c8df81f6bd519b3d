{{ config(order_by='story_position') }}

-- The story-mode funnel: one row per story stage of dim_stages (all 50, unplayed ones with zero
-- counts), in story order (story_position 1..50 by stage_key: chapter, then stage), over story-mode
-- stage events of all days (time attack left out). players_reached_in_order counts the players
-- who cleared the stage and every earlier story stage, whenever and in whatever sequence they did
-- (a player who skipped or never cleared a stage reaches no later one in order). reach_rate is
-- over the first stage's starters, its numerator those of them who reached the stage in order,
-- so it stays between 0 and 1 when a clear's stage_start was lost; drop_rate compares the
-- reached counts with the previous stage's. Bots (dim_users.is_bot) are left out while
-- kpi_exclude_bots is true.

with stages as (

    select * from {{ ref('dim_stages') }}

),

story_stage_events as (

    select * from {{ ref('stg_game__events') }}
    where
        event_type in ('game.stage_start', 'game.stage_clear')
        and game_mode = 'story'
        and {{ not_a_bot_user('user_id') }}

),

story_order as (

    select
        stage_key,
        chapter_number,
        stage_number,
        stage_name,
        toUInt16(row_number() over (order by stage_key)) as story_position
    from stages

),

player_stage_events as (

    select distinct
        story_stage_events.user_id,
        story_stage_events.event_type,
        story_order.story_position
    from story_stage_events
    inner join story_order
        on toUInt16(story_stage_events.chapter_number) * 100 + story_stage_events.stage_number = story_order.stage_key

),

first_stage_starters as (

    select user_id
    from player_stage_events
    where event_type = 'game.stage_start' and story_position = 1

),

-- per player, event type and stage: a clear reaches the stage in order when the player's cleared
-- stages up to it are exactly positions 1..story_position
player_stage_steps as (

    select
        user_id,
        event_type,
        story_position,
        event_type = 'game.stage_clear'
        and row_number() over (partition by user_id, event_type order by story_position) = story_position
            as is_reached_in_order,
        user_id in (select first_stage_starters.user_id from first_stage_starters) as is_first_stage_starter
    from player_stage_events

),

stage_players as (

    select
        story_position,
        uniqExactIf(user_id, event_type = 'game.stage_start') as players_started,
        uniqExactIf(user_id, event_type = 'game.stage_clear') as players_cleared,
        countIf(is_reached_in_order) as players_reached_in_order,
        countIf(is_reached_in_order and is_first_stage_starter) as starters_reached_in_order
    from player_stage_steps
    group by story_position

),

stage_counts as (

    select
        story_order.story_position,
        story_order.stage_key,
        story_order.chapter_number,
        story_order.stage_number,
        story_order.stage_name,
        coalesce(stage_players.players_started, 0) as players_started,
        coalesce(stage_players.players_cleared, 0) as players_cleared,
        coalesce(stage_players.players_reached_in_order, 0) as players_reached_in_order,
        coalesce(stage_players.starters_reached_in_order, 0) as starters_reached_in_order
    from story_order
    left join stage_players on story_order.story_position = stage_players.story_position

),

funnel_steps as (

    select
        story_position,
        stage_key,
        chapter_number,
        stage_number,
        stage_name,
        players_started,
        players_cleared,
        players_reached_in_order,
        starters_reached_in_order,
        first_value(players_started) over (order by story_position) as first_stage_players_started,
        lagInFrame(players_reached_in_order) over (
            order by story_position rows between 1 preceding and current row
        ) as previous_players_reached_in_order
    from stage_counts

),

final as (

    select
        story_position,
        stage_key,
        chapter_number,
        stage_number,
        stage_name,
        players_started,
        players_cleared,
        players_reached_in_order,
        if(
            first_stage_players_started = 0, null, round(starters_reached_in_order / first_stage_players_started, 4)
        ) as reach_rate,
        multiIf(
            story_position = 1, 0,
            previous_players_reached_in_order = 0, null,
            round(1 - players_reached_in_order / previous_players_reached_in_order, 4)
        ) as drop_rate
    from funnel_steps

)

select * from final
