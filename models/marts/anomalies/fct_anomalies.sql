{{ config(order_by='(anomaly_family, anomaly_type, window_start, anomaly_id)') }}

-- One row per anomaly of every family, in one shape (bots are kept):
-- - clickstream (clickstream_anomalies): a flagged session window; observed = clicks in it.
-- - game (game_anomalies): an impossible clear, score overflow or rapid-fire burst of a user.
-- - latency (latency_late_events): a LATE_EVENT; its window is [client time, ingested_at].
-- - kpi (kpi_anomalies, is_anomaly only): KPI_SPIKE (z > 0) or KPI_DROP (z < 0) of a day;
--   observed is the z-score, threshold the z threshold (|observed| > threshold).
-- anomaly_id is the md5 of what identifies the anomaly (family, type, entity, window start and
-- the single event behind it, if any), so it is stable across builds; live_anomalies gives the
-- same id to the same anomaly (both use macros/anomaly_rules.sql).

with clickstream_anomalies as (

    select * from {{ ref('clickstream_anomalies') }}

),

game_anomalies as (

    select * from {{ ref('game_anomalies') }}

),

late_events as (

    select * from {{ ref('latency_late_events') }}

),

kpi_anomalies as (

    select * from {{ ref('kpi_anomalies') }}
    where is_anomaly

),

unioned as (

    {{ bot_anomaly_rows('clickstream_anomalies', 'game_anomalies') }}

    union all

    select
        'latency' as anomaly_family,
        'LATE_EVENT' as anomaly_type,
        late_events.domain,
        'event' as entity_type,
        late_events.event_id as entity_id,
        -- (qualified: in ClickHouse an alias shadows the column of the same name)
        toNullable(late_events.event_id) as event_id,
        late_events.ts as window_start,
        late_events.ingested_at as window_end,
        toFloat64(late_events.latency_ms) as observed_value,
        toFloat64(late_events.threshold_ms) as threshold_value,
        late_events.detected_at
    from late_events

    union all

    select
        'kpi' as anomaly_family,
        if(z_score > 0, 'KPI_SPIKE', 'KPI_DROP') as anomaly_type,
        if(kpi_name = 'conversion_rate', 'clickstream', 'all') as domain,
        'kpi' as entity_type,
        kpi_name as entity_id,
        cast(null, 'Nullable(String)') as event_id,
        toDateTime64(metric_date, 3, 'UTC') as window_start,
        toDateTime64(metric_date + 1, 3, 'UTC') as window_end,
        assumeNotNull(z_score) as observed_value,
        z_threshold as threshold_value,
        detected_at
    from kpi_anomalies

),

final as (

    {{ anomalies_with_ids('unioned') }}

)

select * from final
