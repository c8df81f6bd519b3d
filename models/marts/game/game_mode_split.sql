{{ config(order_by='(event_date, game_mode)') }}

-- One row per (event_date, game_mode) for every day from the first to the last day with a stage
-- event (from dim_date) and every mode ('story', 'time_attack'; staging quarantines stage events
-- of another mode, and any that reached this model would get a row too), zero rows included so
-- each day's split is complete: stage attempts (stage_start), clears, distinct players who
-- started a stage in the mode, and the mode's share of the day's attempts
-- (NULL on a day without attempts). A day is the UTC date of each event's own ts (a stage started
-- before midnight and cleared after counts its clear on the next day). Bots (dim_users.is_bot)
-- are left out of the measures while kpi_exclude_bots is true; the day range is the data's.

with calendar as (

    select * from {{ ref('dim_date') }}

),

all_stage_events as (

    select * from {{ ref('stg_game__events') }}
    where event_type in ('game.stage_start', 'game.stage_clear', 'game.stage_fail')

),

stage_events as (

    select * from all_stage_events
    where {{ not_a_bot_user('user_id') }}

),

play_range as (

    select
        min(event_date) as first_play_date,
        max(event_date) as last_play_date
    from all_stage_events
    -- (no stage events: no range, no rows)
    having count() > 0

),

days as (

    select calendar.date_day as event_date
    from calendar
    cross join play_range
    where calendar.date_day between play_range.first_play_date and play_range.last_play_date

),

game_modes as (

    select arrayJoin(['story', 'time_attack']) as game_mode
    union distinct
    select distinct assumeNotNull(game_mode) as game_mode
    from all_stage_events
    where game_mode is not null

),

day_modes as (

    select
        days.event_date,
        game_modes.game_mode
    from days
    cross join game_modes

),

mode_activity as (

    select
        event_date,
        assumeNotNull(game_mode) as game_mode,
        countIf(event_type = 'game.stage_start') as attempts,
        countIf(event_type = 'game.stage_clear') as clears,
        uniqExactIf(user_id, event_type = 'game.stage_start') as players
    from stage_events
    where game_mode is not null
    group by event_date, game_mode

),

split as (

    select
        day_modes.event_date,
        day_modes.game_mode,
        coalesce(mode_activity.attempts, 0) as attempts,
        coalesce(mode_activity.clears, 0) as clears,
        coalesce(mode_activity.players, 0) as players
    from day_modes
    left join mode_activity
        on
            day_modes.event_date = mode_activity.event_date
            and day_modes.game_mode = mode_activity.game_mode

),

final as (

    select
        event_date,
        game_mode,
        attempts,
        clears,
        players,
        sum(attempts) over (partition by event_date) as day_attempts,
        if(day_attempts = 0, null, round(attempts / day_attempts, 4)) as attempt_share
    from split

)

select * from final
