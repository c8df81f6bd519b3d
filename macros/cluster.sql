{#- The warehouse on a ClickHouse cluster, by configuration (docs/cluster.md).

    With EVENTHOUSE_CLICKHOUSE_CLUSTER set, profiles.yml gives dbt-clickhouse its `cluster`, and
    dbt-clickhouse then creates, exchanges, renames, truncates and drops every relation of a model,
    seed or snapshot ON CLUSTER (with the server's default database engine, Atomic). What it leaves
    to the project is here, in one place:

    - a MergeTree-family engine becomes its Replicated* form (engine_clause below): the replicas of
      a shard copy each other's inserts, and an `ALTER ... REPLACE PARTITION` or lightweight delete
      on one replica reaches the others through Keeper;
    - the project's own DDL (the incremental manifest, created on-run-start) goes through
      on_cluster_ddl;
    - a table that keeps a deduplication window for retried inserts (the targets of materialized
      views on the raw tables, macros/insert_time_tables.sql) keeps it as a replicated table does
      (replicated_deduplication_window_hook).

    Without a cluster every macro here renders exactly what dbt-clickhouse and the project render
    today. tests/integration/test_dbt_cluster_ddl.py builds the project with a two-shard,
    two-replica cluster configured and parses each DDL statement dbt sends with the engine. -#}

{#- The cluster dbt runs ON CLUSTER (quoted, as dbt-clickhouse renders it), or none. -#}
{% macro cluster_name() -%}
    {%- if not execute -%}{{ return(none) }}{%- endif -%}
    {{ return(adapter.get_clickhouse_cluster_name()) }}
{%- endmacro %}

{#- `engine` (a table engine, e.g. 'ReplacingMergeTree(ingested_at)') as a table on the cluster
    uses it: a MergeTree-family engine becomes Replicated* with the same arguments (the Keeper path
    and replica name come from the server's default_replica_path and default_replica_name, which
    ClickHouse accepts only for CREATE ... ON CLUSTER in an Atomic database, or in a Replicated
    database). Unchanged without a cluster, and for other engines (Memory, Null, ...). -#}
{% macro cluster_engine(engine) -%}
    {%- if cluster_name() is none -%}{{ return(engine) }}{%- endif -%}
    {{ return(modules.re.sub('^(\\s*)(?!Replicated|Shared)(\\w*MergeTree)\\b', '\\1Replicated\\2', engine)) }}
{%- endmacro %}

{#- dbt-clickhouse's engine_clause (the pinned version, dbt/include/clickhouse/macros/materializations/
    table.sql), overridden for one change: the engine goes through cluster_engine. Every table,
    incremental, materialized-view target, seed and snapshot table dbt-clickhouse creates takes its
    engine here; without a cluster the clause is dbt-clickhouse's, character for character. -#}
{% macro engine_clause() %}
  engine = {{ cluster_engine(config.get('engine', default='MergeTree()')) }}
{%- endmacro -%}

{#- `statement`, a `CREATE TABLE IF NOT EXISTS` of the project's own (create_incremental_manifest),
    as it runs on the cluster: ON CLUSTER (unless the database is Replicated, which replicates the
    DDL itself, as dbt-clickhouse decides for its own statements) and a Replicated* engine. Use in
    dbt_project.yml: "{{ on_cluster_ddl(create_incremental_manifest()) }}". Unchanged without a
    cluster; any other statement on a cluster is refused, naming it. -#}
{% macro on_cluster_ddl(statement) -%}
    {%- set cluster = cluster_name() -%}
    {%- if cluster is none -%}{{ return(statement) }}{%- endif -%}
    {%- set create = '(?is)^(\\s*create\\s+table\\s+if\\s+not\\s+exists\\s+\\S+)' -%}
    {%- if not modules.re.match(create, statement) -%}
        {{ exceptions.raise_compiler_error(
            "on_cluster_ddl: no cluster form for: " ~ (statement | trim).split('\n')[0]) }}
    {%- endif -%}
    {%- set rendered = statement -%}
    {%- if adapter.should_on_cluster() -%}
        {%- set rendered = modules.re.sub(create, '\\1 ON CLUSTER ' ~ cluster.replace('\\', '\\\\'), rendered, count=1) -%}
    {%- endif -%}
    {{ return(modules.re.sub('(?i)\\b(engine\\s*=\\s*)(?!Replicated|Shared)(\\w*MergeTree)\\b', '\\1Replicated\\2', rendered)) }}
{%- endmacro %}

{#- Post-hook of every model (dbt_project.yml). A table whose settings keep a deduplication window
    for retried inserts (non_replicated_deduplication_window: the targets of materialized views on
    the raw tables, macros/insert_time_tables.sql) keeps the same window once it is replicated: on a
    cluster (Replicated* engines) or on ClickHouse Cloud (database engine Shared: SharedMergeTree),
    where the window that counts is replicated_deduplication_window, and dbt-clickhouse sets that
    one to 0 for its tables. Renders nothing otherwise (dbt then runs no statement). -#}
{% macro replicated_deduplication_window_hook() -%}
    {%- if execute and (cluster_name() is not none or target.database_engine == 'Shared') -%}
        {%- set window = (config.get('settings') or {}).get('non_replicated_deduplication_window') -%}
        {%- if window is not none -%}
            alter table {{ this }} {{ on_cluster_clause(this) }} modify setting replicated_deduplication_window = {{ window }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
