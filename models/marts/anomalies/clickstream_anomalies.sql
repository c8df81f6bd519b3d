{{ config(order_by='(anomaly_type, session_id, window_start)') }}

-- One row per flagged (session_id, anomaly_type, window_start) of clickstream clicks (source
-- session ids; bots are kept). Windows are half-open [window_start, window_end) on epoch time:
-- - HIGH_FREQUENCY: at least `high_frequency_min_clicks` clicks of the session in a tumbling
--   window of `high_frequency_window_seconds` aligned to the epoch (the windows sessionization's
--   bot signal uses).
-- - BOT_LIKE: at least `bot_like_min_clicks` clicks on at most `bot_like_max_distinct_items`
--   distinct items in a window of `bot_like_window_seconds` starting at every multiple of
--   `bot_like_slide_seconds`; windows overlap, so one burst can flag consecutive windows.
-- `detected_at` is when this build ran.

{%- set high_frequency_ms = var('high_frequency_window_seconds') * 1000 %}
{%- set bot_like_window_ms = var('bot_like_window_seconds') * 1000 %}
{%- set bot_like_slide_ms = var('bot_like_slide_seconds') * 1000 %}
{#- each click lies in this many sliding windows (or one fewer, when they do not tile evenly) #}
{%- set windows_per_click = (bot_like_window_ms + bot_like_slide_ms - 1) // bot_like_slide_ms %}

with clicks as (

    select * from {{ ref('stg_clickstream__clicks') }}

),

high_frequency_windows as (

    select
        session_id,
        intDiv(toUnixTimestamp64Milli(clicked_at), {{ high_frequency_ms }}) * {{ high_frequency_ms }}
            as window_start_ms,
        count() as click_count,
        uniqExact(item_id) as unique_items
    from clicks
    group by session_id, window_start_ms
    having click_count >= {{ var('high_frequency_min_clicks') }}

),

clicks_in_sliding_windows as (

    -- A click at t lies in the windows starting at the multiples of the slide in (t - window, t].
    select
        session_id,
        item_id,
        toUnixTimestamp64Milli(clicked_at) as clicked_at_ms,
        (intDiv(clicked_at_ms, {{ bot_like_slide_ms }}) - window_offset) * {{ bot_like_slide_ms }}
            as window_start_ms
    from clicks
    array join range({{ windows_per_click }}) as window_offset

),

bot_like_windows as (

    select
        session_id,
        window_start_ms,
        count() as click_count,
        uniqExact(item_id) as unique_items
    from clicks_in_sliding_windows
    where clicked_at_ms < window_start_ms + {{ bot_like_window_ms }}
    group by session_id, window_start_ms
    having
        click_count >= {{ var('bot_like_min_clicks') }}
        and unique_items <= {{ var('bot_like_max_distinct_items') }}

),

flagged_windows as (

    select
        session_id,
        'HIGH_FREQUENCY' as anomaly_type,
        window_start_ms,
        window_start_ms + {{ high_frequency_ms }} as window_end_ms,
        click_count,
        unique_items
    from high_frequency_windows

    union all

    select
        session_id,
        'BOT_LIKE' as anomaly_type,
        window_start_ms,
        window_start_ms + {{ bot_like_window_ms }} as window_end_ms,
        click_count,
        unique_items
    from bot_like_windows

),

final as (

    select
        session_id,
        anomaly_type,
        fromUnixTimestamp64Milli(toInt64(window_start_ms), 'UTC') as window_start,
        fromUnixTimestamp64Milli(toInt64(window_end_ms), 'UTC') as window_end,
        click_count,
        unique_items,
        now64(3, 'UTC') as detected_at
    from flagged_windows

)

select * from final
