{{ config(order_by='(anomaly_type, user_id, window_start)') }}

-- Game anomalies of players' stage clears (bots are kept). One row per:
-- - IMPOSSIBLE_CLEAR: a stage_clear whose clear_time_ms is below `impossible_clear_ms`.
-- - SCORE_OVERFLOW: a stage_clear whose score is above its stage's max_score in dim_stages
--   (a stage missing from the seed has no max score and is not judged).
-- - RAPID_FIRE: a burst of one user's clears. A clear triggers when at least
--   `rapid_fire_min_clears` of the user's clears (itself included) lie in the window
--   (its time - `rapid_fire_window_seconds`, its time], i.e. they fit in a window
--   [t, t + rapid_fire_window_seconds); the trigger covers [first clear of that window, its
--   time]. Covers that overlap (share a clear) merge into one burst, so bursts never overlap:
--   window_start/window_end are the burst's first and last covered clear, event_count its
--   clears, observed_value the most clears found in any one window of the burst.
-- Event-level rows have window_start = window_end = the clear's time and event_count 1.
-- `detected_at` is when this build ran.

{%- set rapid_fire_window_ms = var('rapid_fire_window_seconds') * 1000 %}
{#- the columns each rule's CTE gives, in this order -#}
{%- set anomaly_columns = [
    'anomaly_type', 'user_id', 'event_id', 'game_session_id', 'stage_key', 'window_start', 'window_end',
    'event_count', 'observed_value', 'threshold_value'
] %}

with game_events as (

    select * from {{ ref('stg_game__events') }}

),

stages as (

    select * from {{ ref('dim_stages') }}

),

stage_clears as (

    select
        event_id,
        user_id,
        game_session_id,
        chapter_number,
        stage_number,
        cast(toUInt16(chapter_number) * 100 + stage_number, 'Nullable(UInt16)') as stage_key,
        clear_time_ms,
        score,
        ts,
        toUnixTimestamp64Milli(ts) as cleared_at_ms
    from game_events
    where event_type = 'game.stage_clear'

),

impossible_clears as (

    select
        'IMPOSSIBLE_CLEAR' as anomaly_type,
        user_id,
        toNullable(event_id) as event_id,
        game_session_id,
        stage_key,
        ts as window_start,
        ts as window_end,
        toUInt64(1) as event_count,
        toFloat64(assumeNotNull(clear_time_ms)) as observed_value,
        toFloat64({{ var('impossible_clear_ms') }}) as threshold_value
    from stage_clears
    where clear_time_ms < {{ var('impossible_clear_ms') }}

),

score_overflows as (

    select
        'SCORE_OVERFLOW' as anomaly_type,
        stage_clears.user_id,
        toNullable(stage_clears.event_id) as event_id,
        stage_clears.game_session_id,
        stage_clears.stage_key,
        stage_clears.ts as window_start,
        stage_clears.ts as window_end,
        toUInt64(1) as event_count,
        toFloat64(assumeNotNull(stage_clears.score)) as observed_value,
        toFloat64(stages.max_score) as threshold_value
    from stage_clears
    inner join stages on stage_clears.stage_key = stages.stage_key
    where stage_clears.score > stages.max_score

),

clear_window_counts as (

    select
        user_id,
        ts,
        count() over trailing_window as clears_in_window,
        min(ts) over trailing_window as window_first_clear_at
    from stage_clears
    window trailing_window as (
        partition by user_id
        order by cleared_at_ms
        range between {{ rapid_fire_window_ms - 1 }} preceding and current row
    )

),

rapid_fire_triggers as (

    select
        user_id,
        ts,
        clears_in_window,
        window_first_clear_at,
        -- triggers in time order also have non-decreasing window starts, so a trigger's cover
        -- overlaps the ones before it exactly when it starts at or before the previous trigger
        lagInFrame(toNullable(ts)) over (
            partition by user_id
            order by ts asc
            rows between unbounded preceding and current row
        ) as previous_trigger_at
    from clear_window_counts
    where clears_in_window >= {{ var('rapid_fire_min_clears') }}

),

rapid_fire_triggers_numbered as (

    select
        *,
        sum(toUInt32(previous_trigger_at is null or window_first_clear_at > previous_trigger_at)) over (
            partition by user_id
            order by ts asc
            rows between unbounded preceding and current row
        ) as burst_number
    from rapid_fire_triggers

),

rapid_fire_bursts as (

    select
        user_id,
        burst_number,
        min(window_first_clear_at) as burst_start_at,
        max(ts) as burst_end_at,
        max(clears_in_window) as peak_clears_in_window
    from rapid_fire_triggers_numbered
    group by user_id, burst_number

),

rapid_fires as (

    select
        'RAPID_FIRE' as anomaly_type,
        rapid_fire_bursts.user_id,
        cast(null, 'Nullable(String)') as event_id,
        cast(null, 'Nullable(String)') as game_session_id,
        cast(null, 'Nullable(UInt16)') as stage_key,
        rapid_fire_bursts.burst_start_at as window_start,
        rapid_fire_bursts.burst_end_at as window_end,
        count() as event_count,
        toFloat64(any(rapid_fire_bursts.peak_clears_in_window)) as observed_value,
        toFloat64({{ var('rapid_fire_min_clears') }}) as threshold_value
    from rapid_fire_bursts
    inner join stage_clears on rapid_fire_bursts.user_id = stage_clears.user_id
    where stage_clears.ts between rapid_fire_bursts.burst_start_at and rapid_fire_bursts.burst_end_at
    group by rapid_fire_bursts.user_id, rapid_fire_bursts.burst_start_at, rapid_fire_bursts.burst_end_at

),

final as (
    {%- for rule in ['impossible_clears', 'score_overflows', 'rapid_fires'] %}

        select
            {%- for column in anomaly_columns %}
                {{ column }},
            {%- endfor %}
            now64(3, 'UTC') as detected_at
        from {{ rule }}
        {%- if not loop.last %}

            union all
        {%- endif %}
    {%- endfor %}

)

select * from final
