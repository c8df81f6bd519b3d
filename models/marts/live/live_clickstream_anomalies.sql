{{ config(materialized='view') }}

-- The clickstream anomalies detected live, right now: clickstream_anomalies' columns, from the
-- window states of live_click_windows (merged with the -Merge combinators: parts not yet merged
-- hold partial states) and the same thresholds (macros/anomaly_rules.sql). detected_at is when
-- the window's newest row was inserted.

with window_states as (

    select * from {{ ref('live_click_windows') }}

),

flagged_windows as (

    select
        session_id,
        anomaly_type,
        window_start_ms,
        {{ click_window_end_ms('anomaly_type', 'window_start_ms') }} as window_end_ms,
        uniqExactMerge(clicks_state) as click_count,
        uniqExactMerge(items_state) as unique_items,
        max(inserted_at) as detected_at
    from window_states
    group by session_id, anomaly_type, window_start_ms
    having {{ click_window_is_flagged('anomaly_type', 'click_count', 'unique_items') }}

),

final as (

    {{ click_anomaly_columns('flagged_windows', 'detected_at') }}

)

select * from final
