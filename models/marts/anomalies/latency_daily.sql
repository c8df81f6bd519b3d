{{ config(**daily_partitioned_config('event_date', order_by='(event_date, domain)')) }}

-- One row per event date (UTC date of the client time) and domain: how late the pipeline
-- received the day's events. Latency is fct_events.latency_ms (ingested_at - ts); an event is
-- late when it is more than `late_event_threshold_seconds` (fct_events.is_late). Percentiles
-- interpolate between the day's exact values (quantileExactInclusive, as numpy's default).
-- Replayed clickstream events carry the replay's age, so that domain is all late by design.

with events as (

    select * from {{ ref('fct_events') }}
    where {{ partition_day_filter('event_date') }}

),

daily_latency as (

    select
        event_date,
        domain,
        count() as event_count,
        countIf(is_late) as late_event_count,
        -- (sqlfluff's ClickHouse dialect reads a parametric aggregate's f(params)(args) as two calls)
        quantilesExactInclusive(0.5, 0.95, 0.99)(latency_ms) as latency_quantiles,  -- noqa: LT01
        max(latency_ms) as latency_max_ms
    from events
    group by event_date, domain

),

final as (

    select
        event_date,
        domain,
        event_count,
        late_event_count,
        late_event_count / event_count as late_event_share,
        latency_quantiles[1] as latency_p50_ms,
        latency_quantiles[2] as latency_p95_ms,
        latency_quantiles[3] as latency_p99_ms,
        latency_max_ms
    from daily_latency

)

select * from final
