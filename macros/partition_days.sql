{#- Daily partitions of the date-based marts (tag `daily_partitioned`, one ClickHouse partition per
    day: partition_by toYYYYMMDD(<day column>), incremental_strategy 'insert_overwrite').

    The days a run recomputes come from the vars `partition_start_date` and `partition_end_date`
    ('YYYY-MM-DD', inclusive; '' = no bound), which the orchestrator passes for a partition run:
        dbt build --select tag:daily_partitioned \
            --vars '{"partition_start_date": "2026-11-03", "partition_end_date": "2026-11-03"}'
    Such a mart computes only those days and dbt-clickhouse replaces only their partitions; every
    other day's partition is left as it is. Without the vars, and on a first build or a
    --full-refresh (the vars are then ignored), every day is computed. -#}

{#- Without the vars, an incremental run recomputes only the days new events touched (the days of
    fct_events rows loaded since the mart's last run, from the incremental manifest, plus the
    `trailing_days` after each for marts whose day rows count a trailing window of input):
    its cost follows the new data. A mart opts out with daily_partitioned_config(...,
    touched_days=false) (the commerce marts, keyed by the order's day, which a later event of an
    old order changes) and then recomputes every day. A day's rows are what its inputs were when
    it was last computed: a session or player flagged as a bot later leaves the days computed
    before unchanged until those days are recomputed (a partition run, or --full-refresh). -#}

{#- The partition days as (start, end) strings ('' = unbounded), checked; ('', '') = every day. -#}
{% macro partition_day_range() -%}
    {%- set bounds = [] -%}
    {%- for name in ['partition_start_date', 'partition_end_date'] -%}
        {%- set value = (var(name, '') or '') | string | trim -%}
        {%- if value and not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', value) -%}
            {{ exceptions.raise_compiler_error(name ~ " must be 'YYYY-MM-DD' or '', got '" ~ value ~ "'") }}
        {%- endif -%}
        {%- if value -%}
            {#- a real calendar day (2026-02-30 is not) -#}
            {%- do modules.datetime.date.fromisoformat(value) -%}
        {%- endif -%}
        {%- do bounds.append(value) -%}
    {%- endfor -%}
    {%- if bounds[0] and bounds[1] and bounds[0] > bounds[1] -%}
        {{ exceptions.raise_compiler_error(
            "partition_start_date " ~ bounds[0] ~ " is after partition_end_date " ~ bounds[1]) }}
    {%- endif -%}
    {{ return(bounds) }}
{%- endmacro %}

{#- True when this run recomputes only some days: an incremental run of an existing table with
    partition_start_date and/or partition_end_date set. -#}
{% macro partition_days_limited() -%}
    {%- set start_date, end_date = partition_day_range() -%}
    {{ return(is_incremental() and (start_date != '' or end_date != '')) }}
{%- endmacro %}

{#- A condition for a `where` in a daily-partitioned mart: `column` (a Date) is one of the
    partition days, or one of the `lookback_days` days before the first of them (for marts whose
    day rows need a trailing window of input, e.g. WAU: filter the input with lookback_days=6 and
    the output without). `1 = 1` when every day is computed (no vars, or not an incremental run
    of an existing table). -#}
{% macro partition_day_filter(column, lookback_days=0) -%}
    {%- if partition_days_limited() -%}
        {{ partition_day_condition(column, lookback_days) }}
    {%- elif partition_days_touched() -%}
        {{ column }} in ({{ touched_days(lookback_days) }})
    {%- else -%}
        1 = 1
    {%- endif -%}
{%- endmacro %}

{#- True when this run recomputes the days new events touched: an incremental run of an existing
    table without the partition vars, in a mart that did not opt out. -#}
{% macro partition_days_touched() -%}
    {%- set start_date, end_date = partition_day_range() -%}
    {%- set meta = config.get('meta') or {} -%}
    {{ return(is_incremental() and start_date == '' and end_date == '' and meta.get('touched_days', false)) }}
{%- endmacro %}

{#- The days (Date) an incremental run recomputes in touched-days mode: every day of an fct_events
    row loaded since the mart's last run and the mart's `trailing_days` after it, each with the
    `lookback_days` before it (for the input of a trailing window). -#}
{% macro touched_days(lookback_days=0) -%}
    {%- set meta = config.get('meta') or {} -%}
    {%- set trailing_days = meta.get('trailing_days', 0) | int -%}
    select distinct arrayJoin(arrayMap(
        day_offset -> addDays(touched.event_date, day_offset),
        range(toInt32({{ -(lookback_days | int) }}), toInt32({{ trailing_days + 1 }}))
    ))
    from (
        select distinct new_events.event_date
        from {{ ref('fct_events') }} as new_events
        where new_events.loaded_at > {{ loaded_after() }}
    ) as touched
{%- endmacro %}

{#- The condition of partition_day_filter whatever the run: for tests that compare a
    daily-partitioned mart with a table, on the days a partition run recomputed. -#}
{% macro partition_day_condition(column, lookback_days=0) -%}
    {%- set start_date, end_date = partition_day_range() -%}
    {%- set conditions = [] -%}
    {%- if start_date -%}
        {%- if lookback_days -%}
            {%- do conditions.append(column ~ " >= subtractDays(toDate('" ~ start_date ~ "'), "
                ~ (lookback_days | int) ~ ")") -%}
        {%- else -%}
            {%- do conditions.append(column ~ " >= toDate('" ~ start_date ~ "')") -%}
        {%- endif -%}
    {%- endif -%}
    {%- if end_date -%}
        {%- do conditions.append(column ~ " <= toDate('" ~ end_date ~ "')") -%}
    {%- endif -%}
    {{ conditions | join(' and ') if conditions else '1 = 1' }}
{%- endmacro %}

{#- query_settings of the daily-partitioned marts. A first build or a run without the vars writes
    every day in one insert, and ClickHouse refuses an insert block touching more than
    max_partitions_per_insert_block (default 100) partitions, while replayed clickstream spans
    months. 10000 days (~27 years) keeps a bound in place of ClickHouse's 0 = unlimited. -#}
{#- The config of a daily-partitioned mart, in one place: incremental insert_overwrite of the day
    partitions of `day_column`, tagged daily_partitioned (Dagster's day-partitioned assets).
    Use: {{ config(**daily_partitioned_config('metric_date', order_by='metric_date')) }} -#}
{% macro daily_partitioned_config(day_column, order_by, touched_days=true, trailing_days=0) -%}
    {#- (touched days: the post-hook records how far fct_events was read, the incremental manifest) -#}
    {{ return({
        'materialized': 'incremental',
        'incremental_strategy': 'insert_overwrite',
        'partition_by': 'toYYYYMMDD(' ~ day_column ~ ')',
        'order_by': order_by,
        'query_settings': daily_partition_query_settings(),
        'tags': ['daily_partitioned'],
        'meta': {'touched_days': touched_days, 'trailing_days': trailing_days},
        'post_hook': "{{ record_loaded_through([ref('fct_events')]) }}" if touched_days else [],
    }) }}
{%- endmacro %}

{% macro daily_partition_query_settings() -%}
    {{ return({'max_partitions_per_insert_block': 10000}) }}
{%- endmacro %}

{#- on-run-start: an incremental model about to run whose existing table has another partition key
    than its config (a mart that was a plain table before it became daily-partitioned, or a
    changed partition_by) is dropped, so this run builds it in full. insert_overwrite would fail
    with "Tables have different partition key", and the append/delete+insert strategies would keep
    the old layout forever. Every model is derived data, so a full build loses nothing; only
    models selected for this run are touched. -#}
{% macro drop_incremental_tables_with_another_partition_key() -%}
    {%- if not execute -%}{{ return('') }}{%- endif -%}
    {%- set wanted = {} -%}
    {%- for node in graph.nodes.values() -%}
        {%- if node.resource_type == 'model' and node.unique_id in selected_resources
            and node.config.materialized == 'incremental' and node.config.get('partition_by') -%}
            {%- set partition_by = node.config.get('partition_by') -%}
            {%- set partition_by = partition_by | join(', ') if partition_by is not string else partition_by -%}
            {%- do wanted.update({node.alias or node.name: partition_by}) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if wanted -%}
        {%- set existing = run_query(
            "select name, partition_key from system.tables where database = '" ~ target.schema
            ~ "' and name in ('" ~ (wanted.keys() | list | join("', '")) ~ "')") -%}
        {%- for row in existing.rows -%}
            {#- compared without spaces and parentheses: ClickHouse reports `(toYYYYMM(d))` for toYYYYMM(d) -#}
            {%- set expected = wanted[row[0]] | replace(' ', '') | replace('(', '') | replace(')', '') -%}
            {%- set actual = (row[1] or '') | replace(' ', '') | replace('(', '') | replace(')', '') -%}
            {%- if actual != expected -%}
                {{ log("dropping " ~ target.schema ~ "." ~ row[0] ~ ": its partition key '" ~ row[1]
                    ~ "' is not the configured '" ~ wanted[row[0]] ~ "'; this run builds it in full", info=True) }}
                {#- through the adapter, so dbt's relation cache forgets the table too -#}
                {%- set relation = adapter.get_relation(database=none, schema=target.schema, identifier=row[0]) -%}
                {%- if relation is not none -%}
                    {%- do adapter.drop_relation(relation) -%}
                {%- else -%}
                    {%- do run_query("drop table if exists `" ~ target.schema ~ "`.`" ~ row[0] ~ "`") -%}
                {%- endif -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}
