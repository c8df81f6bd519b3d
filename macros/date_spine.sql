{#- One row per day from `start_date` to `end_date` inclusive, as `date_day` (Date).
    ClickHouse's numbers() table function does the work; no recursive CTE needed. -#}
{% macro date_spine(start_date, end_date) %}
    select toDate('{{ start_date }}') + toIntervalDay(number) as date_day
    from numbers(toUInt64(dateDiff('day', toDate('{{ start_date }}'), toDate('{{ end_date }}')) + 1))
{% endmacro %}
