{#- `unique` for a large incremental table: every value of `column_name` in the rows this run
    wrote (rows_of_this_run, macros/incremental_manifest.sql) occurs once in the whole table. A
    duplicate of an older row is found too (the whole column is scanned for those values only);
    a duplicate among rows older than the run was found by the run that wrote them. A run that
    checks every row (a first build or --full-refresh) groups the whole column, as `unique` does. -#}
{% test unique_in_rows_of_this_run(model, column_name) %}

    select
        {{ column_name }},
        count() as occurrences
    from {{ model }}
    {%- if not run_checks_every_row(model) %}
    where {{ column_name }} in (
        select run_rows.{{ column_name }} from {{ model }} as run_rows
        where {{ rows_of_this_run(model) }}
    )
    {%- endif %}
    group by {{ column_name }}
    having occurrences > 1

{% endtest %}
