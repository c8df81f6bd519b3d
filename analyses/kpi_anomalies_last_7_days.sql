-- Anomalies of every family found over the last 7 days of data (by window start), per family
-- and type, with how many distinct entities (sessions, players, events, KPIs) they concern.
with anomalies as (

    select * from {{ ref('fct_anomalies') }}

),

final as (

    select
        anomaly_family,
        anomaly_type,
        count() as anomaly_count,
        uniqExact(entity_id) as entities,
        min(window_start) as first_window_start,
        max(window_start) as last_window_start
    from anomalies
    where window_start >= (select max(latest.window_start) from anomalies as latest) - interval 7 day
    group by anomaly_family, anomaly_type

)

select * from final
order by anomaly_count desc
