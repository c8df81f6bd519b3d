{#- `relationships` to a large table, as a lookup: every non-null `column_name` of the model is a
    `field` of `to`. dbt's relationships test joins the whole of `to`, which for fct_events is a
    hash table of every event id; this reads `to` only for the model's values. -#}
{% test exists_in(model, column_name, to, field) %}

    select child.{{ column_name }}
    from {{ model }} as child
    where
        child.{{ column_name }} is not null
        and child.{{ column_name }} not in (
            select parent.{{ field }} from {{ to }} as parent
            where parent.{{ field }} in (select wanted.{{ column_name }} from {{ model }} as wanted)
        )

{% endtest %}
