{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='event_id',
        partition_by='toYYYYMM(event_date)',
        order_by='(domain, event_date, event_type, event_id)',
        pre_hook=["{{ delete_quarantined_events() }}", "{{ record_run_start() }}"]
    )
}}

-- depends_on: {{ ref('stg_clickstream__quarantined_events') }}
-- depends_on: {{ ref('stg_game__quarantined_events') }}
-- depends_on: {{ ref('stg_economy__quarantined_events') }}
-- depends_on: {{ ref('stg_orders__quarantined_events') }}

-- One row per distinct event of every domain, with conformed keys. `latency_ms` is how long the
-- pipeline took to receive the event after the client stamped it (server/ingest time minus ts).
-- Incremental: events loaded since the last run (less `incremental_lookback_minutes`) replace
-- their rows by event_id, so a re-delivered event's latest version wins as in a full refresh.
-- Quarantined events are not in staging; the pre-hook deletes those an earlier run stored (the
-- quarantine models above are built first, hence the depends_on). The second pre-hook records
-- where the run starts reading: the data tests check the rows of the run (__rows_of_this_run__).

with events as (

    select * from {{ ref('int_events_unioned') }}

),

final as (

    select
        event_id,
        event_type,
        domain,
        user_id,
        session_id,
        item_id,
        product_id,
        stage_key,
        order_id,
        revenue,
        ts,
        toDate(ts) as event_date,
        ingested_at,
        loaded_at,
        dateDiff('millisecond', ts, ingested_at) as latency_ms,
        toBool(latency_ms > {{ var('late_event_threshold_seconds') }} * 1000) as is_late
    from events
    {% if is_incremental() %}
        -- (macros/incremental_manifest.sql)
        where loaded_at > {{ incremental_high_water_mark() }}
    {% endif %}

)

select * from final
