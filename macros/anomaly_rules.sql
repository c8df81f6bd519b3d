{#- The five bot rules, written once for the batch marts (clickstream_anomalies, game_anomalies,
    fct_anomalies) and the live detection (models/marts/live: materialized views on the raw
    tables and the views over them). Thresholds and windows are the dbt vars of dbt_project.yml.

    Clickstream windows are half-open [window_start, window_end) on epoch milliseconds:
    - HIGH_FREQUENCY: a tumbling window of `high_frequency_window_seconds` aligned to the epoch,
      flagged at `high_frequency_min_clicks` clicks of one session or more;
    - BOT_LIKE: windows of `bot_like_window_seconds` starting at every multiple of
      `bot_like_slide_seconds`, flagged at `bot_like_min_clicks` clicks or more on at most
      `bot_like_max_distinct_items` distinct items. -#}

{% macro click_window_ms(anomaly_type) -%}
    {%- if anomaly_type == 'HIGH_FREQUENCY' -%}
        {{ var('high_frequency_window_seconds') * 1000 }}
    {%- else -%}
        {{ var('bot_like_window_seconds') * 1000 }}
    {%- endif -%}
{%- endmacro %}

{#- Array(Tuple(anomaly_type, window_start_ms)) of every window a click at `clicked_at_ms` (epoch
    milliseconds) lies in: its HIGH_FREQUENCY window and the BOT_LIKE windows starting at the
    multiples of the slide in (t - window, t]. ARRAY JOIN it to count the clicks per window. -#}
{% macro click_windows(clicked_at_ms) -%}
    {%- set high_frequency_ms = var('high_frequency_window_seconds') * 1000 -%}
    {%- set bot_like_window_ms = var('bot_like_window_seconds') * 1000 -%}
    {%- set bot_like_slide_ms = var('bot_like_slide_seconds') * 1000 -%}
    {#- each click lies in this many sliding windows (or one fewer, when they do not tile evenly) -#}
    {%- set windows_per_click = (bot_like_window_ms + bot_like_slide_ms - 1) // bot_like_slide_ms -%}
    arrayConcat(
        [('HIGH_FREQUENCY', intDiv({{ clicked_at_ms }}, {{ high_frequency_ms }}) * {{ high_frequency_ms }})],
        arrayMap(
            window_start_ms -> ('BOT_LIKE', window_start_ms),
            arrayFilter(
                window_start_ms -> {{ clicked_at_ms }} < window_start_ms + {{ bot_like_window_ms }},
                arrayMap(
                    window_offset -> (intDiv({{ clicked_at_ms }}, {{ bot_like_slide_ms }}) - window_offset)
                        * {{ bot_like_slide_ms }},
                    range({{ windows_per_click }})
                )
            )
        )
    )
{%- endmacro %}

{#- The end of a click window from its type and start (epoch milliseconds). -#}
{% macro click_window_end_ms(anomaly_type, window_start_ms) -%}
    {{ window_start_ms }} + if(
        {{ anomaly_type }} = 'HIGH_FREQUENCY', {{ click_window_ms('HIGH_FREQUENCY') }}, {{ click_window_ms('BOT_LIKE') }}
    )
{%- endmacro %}

{#- True for a flagged click window, from its type, clicks and distinct items. -#}
{% macro click_window_is_flagged(anomaly_type, click_count, unique_items) -%}
    if(
        {{ anomaly_type }} = 'HIGH_FREQUENCY',
        {{ click_count }} >= {{ var('high_frequency_min_clicks') }},
        {{ click_count }} >= {{ var('bot_like_min_clicks') }}
        and {{ unique_items }} <= {{ var('bot_like_max_distinct_items') }}
    )
{%- endmacro %}

{#- The rule's threshold as fct_anomalies reports it (threshold_value of a click window). -#}
{% macro click_window_threshold(anomaly_type) -%}
    toFloat64(if(
        {{ anomaly_type }} = 'HIGH_FREQUENCY', {{ var('high_frequency_min_clicks') }}, {{ var('bot_like_min_clicks') }}
    ))
{%- endmacro %}

{#- Game anomalies of players' stage clears, as CTEs ending in `game_clear_anomalies` (the columns
    of game_anomalies). Needs two CTEs before it:
    - `stage_clears`: one row per distinct stage_clear (event_id, user_id, game_session_id,
      stage_key Nullable(UInt16), clear_time_ms, score, ts, cleared_at_ms, detected_at);
    - `stages`: the catalog with stage_key and max_score (dim_stages).
    - IMPOSSIBLE_CLEAR: a clear whose clear_time_ms is below `impossible_clear_ms`.
    - SCORE_OVERFLOW: a clear whose score is above its stage's max_score (a stage missing from the
      catalog has no max score and is not judged).
    - RAPID_FIRE: a burst of one user's clears. A clear triggers when at least
      `rapid_fire_min_clears` of the user's clears (itself included) lie in the window
      (its time - `rapid_fire_window_seconds`, its time], i.e. they fit in a window
      [t, t + rapid_fire_window_seconds); the trigger covers [first clear of that window, its
      time]. Covers that overlap (share a clear) merge into one burst, so bursts never overlap:
      window_start/window_end are the burst's first and last covered clear, event_count its
      clears, observed_value the most clears found in any one window of the burst.
    Event-level rows have window_start = window_end = the clear's time and event_count 1; a
    burst's detected_at is the latest of its clears'. -#}
{% macro game_clear_anomaly_ctes() -%}
{%- set rapid_fire_window_ms = var('rapid_fire_window_seconds') * 1000 %}
{#- the columns each rule's CTE gives, in this order -#}
{%- set anomaly_columns = [
    'anomaly_type', 'user_id', 'event_id', 'game_session_id', 'stage_key', 'window_start', 'window_end',
    'event_count', 'observed_value', 'threshold_value', 'detected_at'
] %}
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
        toFloat64({{ var('impossible_clear_ms') }}) as threshold_value,
        detected_at
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
        toFloat64(stages.max_score) as threshold_value,
        stage_clears.detected_at
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
        toFloat64({{ var('rapid_fire_min_clears') }}) as threshold_value,
        max(stage_clears.detected_at) as detected_at
    from rapid_fire_bursts
    inner join stage_clears on rapid_fire_bursts.user_id = stage_clears.user_id
    where stage_clears.ts between rapid_fire_bursts.burst_start_at and rapid_fire_bursts.burst_end_at
    group by rapid_fire_bursts.user_id, rapid_fire_bursts.burst_start_at, rapid_fire_bursts.burst_end_at

),

game_clear_anomalies as (
    {%- for rule in ['impossible_clears', 'score_overflows', 'rapid_fires'] %}

        select
            {%- for column in anomaly_columns %}
                {{ column }}{{ ',' if not loop.last }}
            {%- endfor %}
        from {{ rule }}
        {%- if not loop.last %}

            union all
        {%- endif %}
    {%- endfor %}

)
{%- endmacro %}

{#- fct_anomalies' rows of the clickstream and game families (the two union branches), from a
    relation or CTE shaped like clickstream_anomalies and one shaped like game_anomalies. -#}
{% macro bot_anomaly_rows(clickstream_anomalies, game_anomalies) -%}
    select
        'clickstream' as anomaly_family,
        anomaly_type,
        'clickstream' as domain,
        'session' as entity_type,
        session_id as entity_id,
        cast(null, 'Nullable(String)') as event_id,
        window_start,
        window_end,
        toFloat64(click_count) as observed_value,
        {{ click_window_threshold('anomaly_type') }} as threshold_value,
        detected_at
    from {{ clickstream_anomalies }}

    union all

    select
        'game' as anomaly_family,
        anomaly_type,
        'game' as domain,
        'user' as entity_type,
        user_id as entity_id,
        event_id,
        window_start,
        window_end,
        observed_value,
        threshold_value,
        detected_at
    from {{ game_anomalies }}
{%- endmacro %}

{#- clickstream_anomalies' columns from flagged windows (session_id, anomaly_type, window_start_ms,
    window_end_ms, click_count, unique_items): the windows' bounds as UTC times, and `detected_at`
    (an expression). -#}
{% macro click_anomaly_columns(flagged_windows, detected_at) -%}
    select
        session_id,
        anomaly_type,
        fromUnixTimestamp64Milli(toInt64(window_start_ms), 'UTC') as window_start,
        fromUnixTimestamp64Milli(toInt64(window_end_ms), 'UTC') as window_end,
        click_count,
        unique_items,
        {{ detected_at }} as detected_at
    from {{ flagged_windows }}
{%- endmacro %}

{#- The columns of the stage_clears CTE game_clear_anomaly_ctes() needs, from clears with staging's
    columns (event_id, user_id, game_session_id, chapter_number, stage_number, clear_time_ms,
    score, ts) and `detected_at` (an expression); the caller adds its `where`. -#}
{% macro stage_clear_columns(clears, detected_at) -%}
    select
        event_id,
        user_id,
        game_session_id,
        cast(toUInt16(chapter_number) * 100 + stage_number, 'Nullable(UInt16)') as stage_key,
        clear_time_ms,
        score,
        ts,
        toUnixTimestamp64Milli(ts) as cleared_at_ms,
        {{ detected_at }} as detected_at
    from {{ clears }}
{%- endmacro %}

{#- fct_anomalies' columns, anomaly_id first, from rows shaped as bot_anomaly_rows gives them. -#}
{% macro anomalies_with_ids(anomaly_rows) -%}
    select
        {{ anomaly_id() }} as anomaly_id,
        anomaly_family,
        anomaly_type,
        domain,
        entity_type,
        entity_id,
        event_id,
        window_start,
        window_end,
        observed_value,
        threshold_value,
        detected_at
    from {{ anomaly_rows }}
{%- endmacro %}

{#- anomaly_id: the md5 of what identifies an anomaly (family, type, entity, window start and the
    single event behind it, if any), so it is stable across builds and equal live and in batch. -#}
{% macro anomaly_id() -%}
    lower(hex(MD5(concatWithSeparator(
        '|',
        anomaly_family,
        anomaly_type,
        entity_type,
        entity_id,
        toString(toUnixTimestamp64Milli(window_start)),
        coalesce(event_id, '')
    ))))
{%- endmacro %}
