{{ config(**daily_partitioned_config('event_date', order_by='(event_date, chapter_number)')) }}

-- depends_on: {{ ref('fct_events') }}  (the days new events touched: macros/partition_days.sql)

-- Chapter clear-rate heatmap data: one row per (event_date, chapter_number) for every day from
-- the first to the last day with a stage event (from dim_date) and every chapter of dim_stages
-- (cells without play included, rate NULL), both game modes. attempts are stage_start events;
-- clear_rate is clears / (clears + fails) as in game_stage_difficulty (bounded by 1 even when a
-- stage started before midnight is cleared after it, which puts the clear on the next day). A
-- day is the UTC date of each event's ts. Bots (dim_users.is_bot) are left out of the measures while
-- kpi_exclude_bots is true; the day range is the data's.

with stages as (

    select * from {{ ref('dim_stages') }}

),

calendar as (

    select * from {{ ref('dim_date') }}

),

all_stage_events as (

    select * from {{ ref('stg_game__events') }}
    where event_type in ('game.stage_start', 'game.stage_clear', 'game.stage_fail')

),

stage_events as (

    select * from all_stage_events
    where
        {{ partition_day_filter('event_date') }}
        and {{ not_a_bot_user('user_id') }}

),

chapters as (

    select distinct chapter_number
    from stages

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
    where
        calendar.date_day between play_range.first_play_date and play_range.last_play_date
        and {{ partition_day_filter('calendar.date_day') }}

),

cells as (

    select
        days.event_date,
        chapters.chapter_number
    from days
    cross join chapters

),

chapter_days as (

    select
        event_date,
        chapter_number,
        countIf(event_type = 'game.stage_start') as attempts,
        countIf(event_type = 'game.stage_clear') as clears,
        countIf(event_type = 'game.stage_fail') as fails
    from stage_events
    group by event_date, chapter_number

),

final as (

    select
        cells.event_date,
        cells.chapter_number,
        coalesce(chapter_days.attempts, 0) as attempts,
        coalesce(chapter_days.clears, 0) as clears,
        coalesce(chapter_days.fails, 0) as fails,
        if(clears + fails = 0, null, round(clears / (clears + fails), 4)) as clear_rate
    from cells
    left join chapter_days
        on
            cells.event_date = chapter_days.event_date
            and cells.chapter_number = chapter_days.chapter_number

)

select * from final
