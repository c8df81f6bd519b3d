-- 7-day active users: distinct non-bot players active in the game or the
-- economy in the 7 days ending on the as-of day, with that day's DAU and DAU / 7-day actives.
-- dbt compile --select kpi_active_users_7d --vars '{economy_kpi_as_of_date: 2026-11-07}'
-- (economy_kpi_as_of_date "" = the last day in economy_daily_kpis)
{% set as_of_date = var('economy_kpi_as_of_date') %}
with daily_kpis as (

    select * from {{ ref('economy_daily_kpis') }}

),

final as (

    select
        metric_date as as_of_date,
        active_users_7d,
        dau,
        round(dau / active_users_7d, 4) as dau_over_active_users_7d
    from daily_kpis
    where
        {% if as_of_date %}
            metric_date = toDate('{{ as_of_date }}')
        {% else %}
            metric_date = (select max(latest_day.metric_date) from daily_kpis as latest_day)
        {% endif %}

)

select * from final
