-- Daily clickstream KPIs for a date range, from clickstream_daily_metrics.
-- dbt compile --select kpi_clickstream_daily_metrics --vars '{kpi_start_date: 2014-04-01, kpi_end_date: 2014-04-07}'
select
    metric_date,
    total_clicks,
    total_purchases,
    unique_sessions,
    unique_items,
    conversion_rate,
    avg_session_duration_sec,
    avg_clicks_per_session,
    total_revenue,
    avg_order_value
from {{ ref('clickstream_daily_metrics') }}
where metric_date between toDate('{{ var("kpi_start_date") }}') and toDate('{{ var("kpi_end_date") }}')
order by metric_date
