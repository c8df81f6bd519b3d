{#- Table settings of the targets of materialized views on the raw tables (models/marts/live,
    models/marts/realtime). A loader that retries a batch re-sends it with the same deduplication
    token: the raw table drops it, but ClickHouse still runs the views on the block and inserts
    their rows with a token derived from the loader's, which the target drops only when it keeps
    a deduplication window (tests/integration/test_warehouse_expected_output.py retries a batch). -#}
{% macro insert_time_table_settings() -%}
    {{ return({'non_replicated_deduplication_window': var('insert_deduplication_window')}) }}
{%- endmacro %}
