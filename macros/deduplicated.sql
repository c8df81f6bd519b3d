{#- A ReplacingMergeTree relation read with FINAL: re-delivered copies of a row (same sorting
    key) collapse to the latest version at query time, whether or not a merge has run yet.
    Under `dbt run --empty` a relation renders as an empty subquery, and in a dbt unit test as
    the fixture's CTE (`__dbt__cte__...`): neither takes FINAL (nor has anything to collapse). -#}
{% macro deduplicated(relation) -%}
    {%- set rendered = relation | string -%}
    {%- if rendered.strip().startswith('(') or '__dbt__cte__' in rendered -%}
        {{ rendered }}
    {%- else -%}
        {{ rendered }} final
    {%- endif -%}
{%- endmacro %}
