{#- The incremental manifest (as Snowplow's packages keep one): per incremental model, the newest
    loaded_at of its input that its last successful run took in. A run of the model then reads
    the events loaded after it (less var `incremental_lookback_minutes`, for inserts that became
    visible after the last run read the table) and recomputes what they touch: the sessions,
    players, items or days named in the model. Models that carry their own high-water mark in a
    column (fct_events, fct_sessions, the base models) do not need it.

    Use in a model:
        config(materialized='incremental', ..., post_hook=record_loaded_through(ref('<input>')))
        ... where loaded_at > {{ loaded_after() }}
    The post-hook records max(loaded_at) of the input after a successful build: the input's
    tables do not change during a run (the base models are built at its start), so that is what
    the build read. A model without a manifest row (new, or its row lost) reads every event. -#}

{% macro incremental_manifest_relation() -%}
    {{ target.schema }}.eventhouse_incremental_manifest
{%- endmacro %}

{#- on-run-start: the manifest table, once. -#}
{% macro create_incremental_manifest() -%}
    create table if not exists {{ incremental_manifest_relation() }} (
        model String,
        loaded_through DateTime64(3, 'UTC'),
        recorded_at DateTime64(3, 'UTC') default now64(3)
    )
    engine = ReplacingMergeTree(recorded_at)
    order by model
{%- endmacro %}

{#- The high-water mark of a model that keeps its own (fct_events, the session events, fct_sessions,
    the base models): a scalar subquery, the newest `column` of the table less the lookback; an
    empty table (e.g. after `dbt run --empty`) gives 1970, so every event is new. -#}
{% macro incremental_high_water_mark(column='loaded_at') -%}
    (
        select
            if(count() = 0, toDateTime64(0, 3, 'UTC'), max(built.{{ column }}))
            - toIntervalMinute({{ var('incremental_lookback_minutes') }})
        from {{ this }} as built
    )
{%- endmacro %}

{#- A scalar SQL expression: the loaded_at after which this model's incremental run reads events. -#}
{% macro loaded_after(model_name=none) -%}
    {%- set name = model_name or this.identifier -%}
    (
        select
            if(count() = 0, toDateTime64(0, 3, 'UTC'), argMax(manifest.loaded_through, manifest.recorded_at))
            - toIntervalMinute({{ var('incremental_lookback_minutes') }})
        from {{ incremental_manifest_relation() }} as manifest
        where manifest.model = '{{ name }}'
    )
{%- endmacro %}

{#- Post-hook: record the newest loaded_at of `inputs` (relations with a loaded_at column) as read
    by this build. -#}
{% macro record_loaded_through(inputs) -%}
    insert into {{ incremental_manifest_relation() }} (model, loaded_through)
    select '{{ this.identifier }}', max(loaded_through)
    from (
        {%- for input in inputs %}
        select max(loaded_at) as loaded_through from {{ input }}
        {%- if not loop.last %}
        union all
        {%- endif %}
        {%- endfor %}
    )
{%- endmacro %}

{#- Pre-hook of a model that recomputes whole entities (append after it): on an incremental run,
    deletes the rows whose `column` is among `touched` (a select of one column), so an entity's
    rows that its recomputation no longer gives go too. -#}
{% macro delete_touched_rows(column, touched) -%}
    {%- if execute and is_incremental() -%}
        {#- (a lightweight delete rewrites the table's row masks even when it matches nothing) -#}
        {%- set held = run_query(
            'select count() from ' ~ this ~ ' where ' ~ column ~ ' in (' ~ touched ~ ')') -%}
        {%- if held.columns[0].values()[0] > 0 -%}
            delete from {{ this }} where {{ column }} in ({{ touched }})
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{#- The clickstream sessions an incremental run of clickstream_anomalies recomputes: those with
    clicks loaded since its last run, and those with a quarantined event (a click can leave
    staging later, when an event that clashes with it arrives). -#}
{% macro touched_clickstream_sessions() -%}
    select touched_clicks.session_id
    from {{ ref('stg_clickstream__clicks') }} as touched_clicks
    where touched_clicks.loaded_at > {{ loaded_after() }}
    union distinct
    select assumeNotNull(quarantined.session_id)
    from {{ ref('stg_clickstream__quarantined_events') }} as quarantined
    where quarantined.session_id is not null
{%- endmacro %}

{#- The players an incremental run of game_anomalies recomputes: those with game events loaded
    since its last run, and those with a quarantined game event. -#}
{% macro touched_players() -%}
    select touched_events.user_id
    from {{ ref('stg_game__events') }} as touched_events
    where touched_events.loaded_at > {{ loaded_after() }}
    union distinct
    select assumeNotNull(quarantined.user_id)
    from {{ ref('stg_game__quarantined_events') }} as quarantined
    where quarantined.user_id is not null
{%- endmacro %}

{#- The items an incremental run of dim_items recomputes: those of clickstream events in fct_events
    loaded since its last run, and those of a quarantined clickstream event. -#}
{% macro touched_items() -%}
    select touched_events.item_id
    from {{ ref('fct_events') }} as touched_events
    where
        touched_events.domain = 'clickstream'
        and touched_events.loaded_at > {{ loaded_after() }}
        and touched_events.item_id is not null
    union distinct
    select JSONExtract(quarantined.payload, 'item_id', 'UInt64')
    from {{ ref('stg_clickstream__quarantined_events') }} as quarantined
{%- endmacro %}

{#- Tests that would scan all of a large incremental table check the rows of the run instead.
    The table's pre-hook `record_run_start()` records where its run starts reading (its newest
    loaded_at less the lookback; 1970 on a first build or --full-refresh, so those check every
    row), and `rows_of_this_run(relation)` renders the condition for its rows loaded since: the
    rows this run wrote or rewrote. A relation without a run start of its own takes fct_events'
    window. A generic test takes it through the `where` config
    placeholder `__rows_of_this_run__` (macro get_where_subquery below) or calls it itself. -#}
{% macro record_run_start() -%}
    insert into {{ incremental_manifest_relation() }} (model, loaded_through)
    {%- if is_incremental() %}
    select '{{ this.identifier }}__run_start', {{ incremental_high_water_mark() }}
    {%- else %}
    select '{{ this.identifier }}__run_start', toDateTime64(0, 3, 'UTC')
    {%- endif %}
{%- endmacro %}

{#- (a relation with no run start of its own, e.g. a staging view, takes fct_events': the events
    loaded since the last run that read them, and this run's) -#}
{% macro rows_of_this_run(relation) -%}
    {%- set own = relation.identifier ~ '__run_start' -%}
    loaded_at > (
        select
            multiIf(
                countIf(run_start.model = '{{ own }}') > 0,
                argMaxIf(run_start.loaded_through, run_start.recorded_at, run_start.model = '{{ own }}'),
                countIf(run_start.model = 'fct_events__run_start') > 0,
                argMaxIf(run_start.loaded_through, run_start.recorded_at, run_start.model = 'fct_events__run_start'),
                toDateTime64(0, 3, 'UTC')
            )
        from {{ incremental_manifest_relation() }} as run_start
        where run_start.model in ('{{ own }}', 'fct_events__run_start')
    )
{%- endmacro %}

{#- True when the run checks every row of `relation` (a first build or --full-refresh of it, or
    of fct_events for a view of events, or no record at all): a test then takes its plain form, as
    a lookup of every row in a set of every row would hold the whole table in memory. -#}
{% macro run_checks_every_row(relation) -%}
    {%- if not execute -%}{{ return(true) }}{%- endif -%}
    {%- if adapter.get_relation(database=none, schema=target.schema,
            identifier='eventhouse_incremental_manifest') is none -%}
        {{ return(true) }}
    {%- endif -%}
    {%- set own = relation.identifier ~ '__run_start' -%}
    {%- set found = run_query(
        "select countIf(model = '" ~ own ~ "') > 0, argMaxIf(loaded_through, recorded_at, model = '" ~ own
        ~ "'), countIf(model = 'fct_events__run_start') > 0, argMaxIf(loaded_through, recorded_at, "
        ~ "model = 'fct_events__run_start') from " ~ incremental_manifest_relation()
        ~ " where model in ('" ~ own ~ "', 'fct_events__run_start')") -%}
    {%- set row = found.rows[0] -%}
    {%- set start = row[1] if row[0] else (row[3] if row[2] else none) -%}
    {{ return(start is none or start.year <= 1970) }}
{%- endmacro %}

{#- dbt's get_where_subquery (the `where` config of a generic test), with the placeholder
    `__rows_of_this_run__` replaced by rows_of_this_run() of the tested relation. -#}
{% macro clickhouse__get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- if where -%}
        {%- set where = where | replace('__rows_of_this_run__', rows_of_this_run(relation)) -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
