{{ config(order_by='(kpi_name, metric_date)') }}

-- One row per day of kpi_daily and KPI (event_count, dau, conversion_rate, revenue): the day's
-- value against the same KPI on the `kpi_anomaly_trailing_days` calendar days before it (the
-- day itself not included; days without a row are absent from the window, not zeros). The
-- z-score is null when the value is null, fewer than 2 prior days hold a value, or their
-- standard deviation (sample) is 0; a day is an anomaly when abs(z) > `kpi_anomaly_z_threshold`.
-- The computation is the kpi_z_scores macro, which the kpi_anomaly generic test also uses.
-- `detected_at` is when this build ran.

with kpi_daily as (

    select * from {{ ref('kpi_daily') }}

),

kpi_values as (

    select
        metric_date,
        kpi_name,
        daily_value
    from kpi_daily
    array join
        ['event_count', 'dau', 'conversion_rate', 'revenue'] as kpi_name,
        [
            toNullable(toFloat64(event_count)),
            toNullable(toFloat64(dau)),
            toNullable(toFloat64(conversion_rate)),
            toNullable(toFloat64(revenue))
        ] as daily_value

),

z_scores as (

    {{ kpi_z_scores('kpi_values', 'daily_value', 'metric_date', partition_by='kpi_name') }}

),

final as (

    select
        metric_date,
        kpi_name,
        kpi_value,
        trailing_mean,
        trailing_stddev,
        prior_days,
        z_score,
        z_threshold,
        is_anomaly,
        now64(3, 'UTC') as detected_at
    from z_scores

)

select * from final
