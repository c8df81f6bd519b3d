{#- The newest `field` is no older than `interval` `datepart`s before now (dbt_utils.recency).
    An empty model fails: it has no recent row. -#}
{% test recency(model, field, datepart, interval) %}

    with newest as (

        select max({{ field }}) as newest_at, count() as row_count from {{ model }}

    )

    select newest_at
    from newest
    where row_count = 0 or newest_at < now() - interval {{ interval }} {{ datepart }}

{% endtest %}
