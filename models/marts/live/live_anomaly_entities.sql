{{
    config(
        materialized='materialized_view',
        settings=insert_time_table_settings(),
        engine='MergeTree()',
        order_by='(inserted_at, entity_type, entity_id)',
        ttl='toDateTime(inserted_at) + INTERVAL ' ~ var('live_anomaly_horizon_hours') ~ ' HOUR'
    )
}}

-- Which entities the live tables got rows for, and when: one row per (entity, inserted block),
-- sorted by insert time, so a poller finds the sessions and players touched since its last pass
-- without scanning the live tables: `select * from live_anomalies where entity_id in (select
-- entity_id from live_anomaly_entities where inserted_at >= ...)` (ClickHouse pushes the filter
-- down to the live tables' sorting keys). Two views feed it, one per raw table; they take the
-- same events as live_click_windows and live_stage_clears.

--clicks:begin
select
    'session' as entity_type,
    assumeNotNull(session_id) as entity_id,
    max(now64(3, 'UTC')) as inserted_at
from {{ source('raw', 'raw_clickstream_events') }}
where event_type = 'clickstream.click' and empty({{ clickstream_quarantine_reasons() }})
group by entity_id
--clicks:end

union all

--clears:begin
select
    'user' as entity_type,
    assumeNotNull(user_id) as entity_id,
    max(now64(3, 'UTC')) as inserted_at
from {{ source('raw', 'raw_game_events') }}
where event_type = 'game.stage_clear' and empty({{ game_quarantine_reasons(stage_catalog=false) }})
group by entity_id
--clears:end
