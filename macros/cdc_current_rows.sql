{#-
    The rows of a CDC table (ingestion/cdc_tables.py) as they stand in PostgreSQL now: each key's
    latest change by LSN, deleted rows left out, and nothing whose latest change is older than the
    table's latest truncate. Every snapshot starts with a truncate one below its LSN, so a row
    deleted while no replication slot existed (and hence never seen deleted) goes as well.
    The same as `FINAL` plus the truncate rule; written out so that unit tests can feed it rows.
-#}
{% macro cdc_current_rows(relation, key_columns) %}
    select
        {%- for column in key_columns %}
            {{ column }},
        {%- endfor %}
        argMax(row_json, lsn) as row_json,
        max(lsn) as cdc_lsn,
        argMax(source_ts, lsn) as cdc_committed_at
    from {{ relation }}
    where op != 't'
    group by {{ key_columns | join(', ') }}
    having
        argMax(is_deleted, lsn) = 0
        and cdc_lsn > (select max(lsn) from {{ relation }} where op = 't')
{% endmacro %}
