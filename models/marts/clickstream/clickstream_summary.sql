{{ config(order_by='tuple()') }}

-- One row: the clickstream KPIs over the whole period, bot sessions left out as in the daily
-- mart (clickstream_kpi_clicks/_purchases). conversion_rate is session-based as in
-- clickstream_daily_metrics, but over the period: a session that clicks one day and buys the
-- next converts here. purchases_per_click is total_purchases / total_clicks.

with clicks as (

    select * from {{ ref('clickstream_kpi_clicks') }}

),

purchases as (

    select * from {{ ref('clickstream_kpi_purchases') }}

),

click_totals as (

    select
        count() as total_clicks,
        uniqExact(session_id) as unique_sessions
    from clicks

),

purchase_totals as (

    select
        count() as total_purchases,
        sum(price * quantity) as total_revenue,
        uniqExactIf(session_id, session_id in (select clicks.session_id from clicks)) as converted_sessions
    from purchases

),

final as (

    select
        click_totals.total_clicks,
        purchase_totals.total_purchases,
        click_totals.unique_sessions,
        if(click_totals.unique_sessions = 0, null, purchase_totals.converted_sessions / click_totals.unique_sessions)
            as conversion_rate,
        if(click_totals.total_clicks = 0, null, purchase_totals.total_purchases / click_totals.total_clicks)
            as purchases_per_click,
        if(purchase_totals.total_purchases = 0, null, purchase_totals.total_revenue / purchase_totals.total_purchases)
            as avg_order_value,
        purchase_totals.total_revenue
    from click_totals
    cross join purchase_totals

)

select * from final
