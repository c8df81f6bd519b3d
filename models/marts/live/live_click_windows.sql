{{
    config(
        materialized='materialized_view',
        settings=insert_time_table_settings(),
        engine='AggregatingMergeTree()',
        order_by='(session_id, anomaly_type, window_start_ms)',
        ttl='toDateTime(inserted_at) + INTERVAL ' ~ var('live_anomaly_horizon_hours') ~ ' HOUR'
    )
}}

-- Live detection of the clickstream rules, at insert time (dbt-clickhouse `materialized_view`):
-- the view `live_click_windows_mv` adds every block the loader inserts into the raw clickstream
-- table to this AggregatingMergeTree, one row per (session, rule, window) with aggregate states:
-- the distinct clicks (by event id, so a re-delivered event counts once) and distinct items.
-- The windows are the batch mart's (macro click_windows); the thresholds are applied when read
-- (live_clickstream_anomalies), so changing one needs no rebuild. Quarantined clicks (their own
-- content breaks a staging rule) are left out, as in staging; an event id used in another domain
-- cannot be known at insert time and is counted here. A window expires
-- `live_anomaly_horizon_hours` after its newest row was inserted (not after its event time: a
-- replay of 2014 clicks is detected like fresh ones); the batch marts stay the record.

select
    assumeNotNull(session_id) as session_id,
    click_window.1 as anomaly_type,
    click_window.2 as window_start_ms,
    uniqExactState(sipHash64(event_id)) as clicks_state,
    uniqExactState(JSONExtract(payload, 'item_id', 'UInt64')) as items_state,
    maxSimpleState(now64(3, 'UTC')) as inserted_at
from {{ source('raw', 'raw_clickstream_events') }}
array join {{ click_windows('toUnixTimestamp64Milli(ts)') }} as click_window
where event_type = 'clickstream.click' and empty({{ clickstream_quarantine_reasons() }})
group by session_id, anomaly_type, window_start_ms
