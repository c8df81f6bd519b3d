{#- A staging view of one source's events (stg_game__events, stg_economy__events,
    stg_orders__order_events): the events of `base_model` that are not quarantined, one row per
    distinct event_id, with the envelope every such view has (event_id, event_type, then
    `columns`, then ts, event_date, ingested_at, loaded_at). Each entry of `columns` is a SQL
    expression, or a payload field as (json key, ClickHouse type, column name), read with
    JSONExtract. -#}
{% macro staged_events(source_name, base_model, columns) -%}
with source as (

    select * from {{ ref(base_model) }}
    where {{ not_quarantined(source_name) }}

),

renamed as (

    select
        event_id,
        event_type,
        {%- for column in columns %}
            {%- if column is string %}
        {{ column }},
            {%- else %}
        JSONExtract(payload, '{{ column[0] }}', '{{ column[1] }}') as {{ column[2] }},
            {%- endif %}
        {%- endfor %}
        ts,
        toDate(ts) as event_date,
        ingested_at,
        loaded_at
    from source

)

select * from renamed
{%- endmacro %}
