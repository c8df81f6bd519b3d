{#- KPI anomalies: a day's KPI value against the same KPI on the trailing days before it.

    `kpi_z_scores` is the one place the z-score is defined; the `kpi_anomalies` mart and the
    `kpi_anomaly` generic test both render it. For each row (one per `date_column`, or per
    `partition_by` and `date_column`) it returns the row's keys and:
      kpi_value        the KPI as Float64 (null stays null)
      trailing_mean    mean of the non-null values of the calendar days [day - trailing_days, day - 1]
                       (the day itself is not included; days without a row are simply absent)
      trailing_stddev  their sample standard deviation (null with fewer than 2 of them)
      prior_days       how many non-null values that window holds
      z_score          (kpi_value - trailing_mean) / trailing_stddev; null when the value is null,
                       fewer than 2 prior days hold a value, or the trailing stddev is 0
      z_threshold      the threshold used
      is_anomaly       abs(z_score) > z_threshold (false when z_score is null)
    `trailing_days` and `z_threshold` default to the vars kpi_anomaly_trailing_days and
    kpi_anomaly_z_threshold. -#}
{% macro kpi_z_scores(relation, value_column, date_column, trailing_days=none, z_threshold=none, partition_by=none) %}
    {%- set trailing_days = var('kpi_anomaly_trailing_days') if trailing_days is none else trailing_days -%}
    {%- set z_threshold = var('kpi_anomaly_z_threshold') if z_threshold is none else z_threshold -%}
    {%- set trailing_window -%}
        ({{ 'partition by ' ~ partition_by if partition_by else '' }}
            order by toRelativeDayNum(toDate({{ date_column }}))
            range between {{ trailing_days | int }} preceding and 1 preceding)
    {%- endset %}

    select
        {{ partition_by ~ ',' if partition_by else '' }}
        {{ date_column }},
        kpi_value,
        if(prior_days = 0, null, trailing_mean_all) as trailing_mean,
        if(prior_days < 2, null, trailing_stddev_all) as trailing_stddev,
        prior_days,
        if(
            prior_days < 2 or trailing_stddev_all = 0,
            null,
            (kpi_value - trailing_mean_all) / trailing_stddev_all
        ) as z_score,
        toFloat64({{ z_threshold }}) as z_threshold,
        toBool(coalesce(abs(z_score) > z_threshold, false)) as is_anomaly
    from (
        select
            {{ partition_by ~ ',' if partition_by else '' }}
            {{ date_column }},
            toNullable(toFloat64({{ value_column }})) as kpi_value,
            avg(kpi_value) over {{ trailing_window }} as trailing_mean_all,
            stddevSampStable(kpi_value) over {{ trailing_window }} as trailing_stddev_all,
            count(kpi_value) over {{ trailing_window }} as prior_days
        from {{ relation }}
    ) as trailing_stats
{% endmacro %}

{#- Fails (returns) the rows of `model` whose `column_name` is a KPI anomaly: abs(z) above
    `z_threshold` against the `trailing_days` calendar days before the row's `date_column`.
    The model holds one row per date. Real data can legitimately spike (a campaign, a
    release), so apply it with severity warn. -#}
{% test kpi_anomaly(model, column_name, date_column, trailing_days=none, z_threshold=none) %}

    select *
    from (
        {{ kpi_z_scores(model, column_name, date_column, trailing_days, z_threshold) }}
    ) as z_scores
    where is_anomaly

{% endtest %}
