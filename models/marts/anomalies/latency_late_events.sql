{{ config(order_by='(domain, event_date, event_id)') }}

-- One row per late event (fct_events.is_late: received more than
-- `late_event_threshold_seconds` after its client time) of the domains listed in
-- `latency_anomaly_domains`, the ones whose events arrive live (replayed clickstream history
-- is years "late" by construction). Bots are kept. `detected_at` is when this build ran.

with events as (

    select * from {{ ref('fct_events') }}

),

final as (

    select
        event_id,
        domain,
        event_type,
        user_id,
        session_id,
        event_date,
        ts,
        ingested_at,
        latency_ms,
        toInt64({{ var('late_event_threshold_seconds') }} * 1000) as threshold_ms,
        latency_ms - threshold_ms as delay_over_threshold_ms,
        now64(3, 'UTC') as detected_at
    from events
    where
        is_late
        and domain in ({{ "'" ~ var('latency_anomaly_domains') | join("', '") ~ "'" }})

)

select * from final
