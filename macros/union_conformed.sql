{#- Union all of models into conformed columns (int_events_unioned).
    columns: [(name, type)], in output order; a type casts the branch's expression to it, none
    keeps it as it is (a column every branch has, with the same type).
    branches: [{'model': ..., name: sql expression, ...}]; a column a branch does not name is
    cast(null, type). A new source is one more branch. -#}
{% macro union_conformed(columns, branches) -%}
    {%- for branch in branches %}
        {%- if not loop.first %}

    union all
{% endif %}
    select
        {%- for name, type in columns %}
            {%- set expression = branch.get(name) %}
            {%- if expression is none and type is none %}
                {%- set expression = name %}
            {%- endif %}
        {% if expression is none -%}
            cast(null, '{{ type }}') as {{ name }}
        {%- elif type is none and expression == name -%}
            {{ name }}
        {%- elif type is none -%}
            {{ expression }} as {{ name }}
        {%- else -%}
            cast({{ expression }}, '{{ type }}') as {{ name }}
        {%- endif -%}
            {{- "," if not loop.last }}
        {%- endfor %}
    from {{ ref(branch['model']) }}
    {%- endfor %}
{%- endmacro %}
