{#- on-run-start (dbt_project.yml): stop a run at once, with one line naming the commands to run
    first, when it would unit-test an incremental model whose table does not exist yet.

    A unit test of an incremental model that gives `this` as an input takes the fixture's column
    types from the model's existing table; on a brand-new database dbt otherwise fails each such
    test with a compilation error deep in the build and skips everything downstream of the model.
    Unit tests run in `dbt build` and `dbt test` unless their resource type is left out (Dagster
    leaves them out). The hook sees the selected models and data tests (not the unit tests, nor
    their inputs), so it asks for the table of every selected incremental model, or of the model a
    selected data test is attached to. -#}
{% macro unit_tests_need_incremental_relations() -%}
    {%- set excluded = invocation_args_dict.get('exclude_resource_types') or [] -%}
    {%- set only = invocation_args_dict.get('resource_types') or [] -%}
    {%- set runs_unit_tests = invocation_args_dict.get('which') in ['build', 'test']
        and 'unit_test' not in excluded and (not only or 'unit_test' in only) -%}
    {%- if execute and runs_unit_tests -%}
        {%- set missing = [] -%}
        {%- for unique_id in selected_resources -%}
            {%- set node = graph.nodes.get(unique_id) or {} -%}
            {%- if node.get('resource_type') == 'test' and node.get('attached_node') -%}
                {%- set node = graph.nodes.get(node.get('attached_node')) or {} -%}
            {%- endif -%}
            {%- if node.get('resource_type') == 'model' and node.config.materialized == 'incremental'
                and node.name not in missing -%}
                {%- set relation = adapter.get_relation(
                    database=node.database, schema=node.schema, identifier=node.alias) -%}
                {%- if relation is none -%}
                    {%- do missing.append(node.name) -%}
                {%- endif -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if missing -%}
            {{ exceptions.raise_compiler_error(
                "unit tests of incremental models read their tables, and " ~ (missing | sort | join(', '))
                ~ " do not exist yet: run `dbt seed` and `dbt run --empty --select +config.materialized:incremental`"
                ~ " first") }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
