{#- A ReplacingMergeTree relation read with FINAL: re-delivered copies of a row (same sorting
    key) collapse to the latest version at query time, whether or not a merge has run yet.
    Under `dbt run --empty` a relation renders as an empty subquery, which takes no FINAL
    (and has nothing to collapse). -#}
{% macro deduplicated(relation) -%}
    {%- set rendered = relation | string -%}
    {%- if rendered.strip().startswith('(') -%}
        {{ rendered }}
    {%- else -%}
        {{ rendered }} final
    {%- endif -%}
{%- endmacro %}
