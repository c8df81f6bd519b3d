-- The session funnel summed over a date range, with its percentages recomputed for the range
-- (each stage over the sum of the three, as in clickstream_session_funnel).
with funnel_days as (

    select * from {{ ref('clickstream_session_funnel') }}
    where metric_date between toDate('{{ var("kpi_start_date") }}') and toDate('{{ var("kpi_end_date") }}')

),

range_totals as (

    select
        stage_order,
        funnel_stage,
        sum(session_count) as session_count
    from funnel_days
    group by stage_order, funnel_stage

),

final as (

    select
        stage_order,
        funnel_stage,
        session_count,
        round(
            100 * session_count
            / nullIf(sum(session_count) over (), 0),
            2
        ) as percentage
    from range_totals

)

select * from final
order by stage_order
