{{ config(order_by='tuple()') }}

-- One row: what the warehouse holds of the clickstream, bots included (clickstream_summary is
-- the KPI view without them): the anomalies flagged, the days of clickstream_daily_metrics, and
-- every click, buy and session (distinct source session_id with a click or a buy).

with event_totals as (

    select
        countIf(event_type = 'clickstream.click') as total_clicks,
        countIf(event_type = 'clickstream.purchase') as total_purchases,
        uniqExact(session_id) as total_sessions
    from {{ ref('int_events_unioned') }}
    where domain = 'clickstream'

),

final as (

    select
        (select count() from {{ ref('clickstream_anomalies') }}) as total_anomalies,
        (select count() from {{ ref('clickstream_daily_metrics') }}) as days_processed,
        event_totals.total_clicks,
        event_totals.total_purchases,
        event_totals.total_sessions
    from event_totals

)

select * from final
