{#- No two rows share the same values of `combination_of_columns`
    (dbt_utils.unique_combination_of_columns). -#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

    select
        {{ combination_of_columns | join(', ') }},
        count() as rows_with_these_values
    from {{ model }}
    group by {{ combination_of_columns | join(', ') }}
    having count() > 1

{% endtest %}
