{#- Rows where `expression` is not true fail the test (dbt_utils.expression_is_true, written here
    because dbt packages cannot be downloaded). `where` narrows the rows checked. -#}
{% test expression_is_true(model, expression, column_name=none) %}

    select *
    from {{ model }}
    where not ({{ column_name ~ ' ' if column_name else '' }}{{ expression }})

{% endtest %}
