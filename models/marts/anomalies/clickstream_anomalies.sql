{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        order_by='(anomaly_type, session_id, window_start)',
        pre_hook="{{ delete_touched_rows('session_id', touched_clickstream_sessions()) }}",
        post_hook="{{ record_loaded_through([ref('stg_clickstream__clicks')]) }}"
    )
}}

-- One row per flagged (session_id, anomaly_type, window_start) of clickstream clicks (source
-- session ids; bots are kept). The rules and their windows (HIGH_FREQUENCY tumbling,
-- BOT_LIKE sliding; half-open [window_start, window_end) on epoch time) are macros of
-- macros/anomaly_rules.sql, which the live detection (live_clickstream_anomalies) shares.
-- Windows overlap for BOT_LIKE, so one burst can flag consecutive windows.
-- `detected_at` is when this build ran.
--
-- Incremental: a session's windows depend on its clicks only, so a run recomputes the sessions
-- with clicks loaded since the last run (the incremental manifest) and those with a quarantined
-- click (a click can leave staging later); the pre-hook deletes their rows first, so a window
-- that is no longer flagged goes too.

with clicks as (

    select * from {{ ref('stg_clickstream__clicks') }}
    {%- if is_incremental() %}
    where session_id in ({{ touched_clickstream_sessions() }})
    {%- endif %}

),

clicks_in_windows as (

    select
        session_id,
        item_id,
        click_window.1 as anomaly_type,
        click_window.2 as window_start_ms
    from clicks
    array join {{ click_windows('toUnixTimestamp64Milli(clicked_at)') }} as click_window

),

flagged_windows as (

    select
        session_id,
        anomaly_type,
        window_start_ms,
        {{ click_window_end_ms('anomaly_type', 'window_start_ms') }} as window_end_ms,
        count() as click_count,
        uniqExact(item_id) as unique_items
    from clicks_in_windows
    group by session_id, anomaly_type, window_start_ms
    having {{ click_window_is_flagged('anomaly_type', 'click_count', 'unique_items') }}

),

final as (

    {{ click_anomaly_columns('flagged_windows', "now64(3, 'UTC')") }}

)

select * from final
