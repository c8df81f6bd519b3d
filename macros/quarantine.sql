{#- Quarantine rules: the staging invariants an event's own content can break although the loader
    accepted it (docs/analyst-guide.md, "Quarantine"). `<source>_quarantine_reasons()` renders an
    Array(String) of reason codes over a raw table's columns (event_type, ts, payload), empty for a
    clean event. The base views (`base_<source>__events`) add it as `quarantine_reasons`, with
    the clashes with other domains (base_raw__cross_domain_conflicts); the quarantine tables
    (`stg_<source>__quarantined_events`, built once per run; the orders one adds the rules over
    an order's versions) hold the events with a reason, and the `stg_` views keep the others
    (through the run's verdicts: macro `not_quarantined`). The insert-time aggregates read the
    raw game table and filter with `game_quarantine_reasons(stage_catalog=false)`.

    Each rule here is row-wise. Numbers are checked on one parse of the payload into
    Float64: the staging columns are narrower types, into which JSONExtract turns a value that
    does not fit (a negative quantity, a score above 2^32) into 0 or NULL without a word.
    Limits: UInt32 4294967295, UInt64 18446744073709551615 (written 18446744073709551615.0: the
    Float64 of the largest UInt64 is 2^64, which an exact comparison with the integer would put
    out of range), and money below 10^15 (a price, or price x quantity, in its unit): Decimal64(2)
    carries up to about 9.2 x 10^16, and larger amounts make fct_events, the sessions and the
    sales marts fail with a Decimal overflow. -#}

{#- The event's UTC day lies outside the calendar (vars dim_date_start, dim_date_end), to which
    every model keyed by day relates. -#}
{% macro quarantine_ts_outside_calendar() -%}
    toDate32(ts) not between toDate32('{{ var("dim_date_start") }}') and toDate32('{{ var("dim_date_end") }}')
{%- endmacro %}

{#- Each source's rules take the payload's fields from one JSONExtract into a tuple (`field`),
    inside arrayMap: ClickHouse evaluates the branches of `if` and the right side of `and`
    lazily (short-circuit), and a JSONExtract inside them is run once per branch; the lambda's
    argument is extracted once. -#}
{% macro clickstream_quarantine_reasons() -%}
    arrayMap(
        field -> arrayFilter(reason -> reason != '', [
            if({{ quarantine_ts_outside_calendar() }}, 'ts_outside_calendar', ''),
            if(tupleElement(field, 'item_id') not between 0 and 18446744073709551615.0, 'item_id_out_of_range', ''),
            if(event_type = 'clickstream.purchase' and tupleElement(field, 'price') < 0, 'price_negative', ''),
            if(
                event_type = 'clickstream.purchase' and (
                    tupleElement(field, 'price') >= 1e15
                    or tupleElement(field, 'price') * tupleElement(field, 'quantity') >= 1e15
                ),
                'price_too_large',
                ''
            ),
            if(
                event_type = 'clickstream.purchase' and tupleElement(field, 'quantity') not between 0 and 4294967295,
                'quantity_out_of_range',
                ''
            )
        ]),
        [JSONExtract(payload, 'Tuple(item_id Nullable(Float64), price Nullable(Float64), quantity Nullable(Float64))')]
    )[1]
{%- endmacro %}

{#- Stage events name a stage of the catalog (seed game_stages) and a known mode; the numbers fit
    their staging columns (UInt32, duration_ms UInt64). The insert-time aggregates leave the
    catalog out (stage_catalog=false): an insert into the raw table must not read another
    relation, which may be missing or empty (after `dbt run --empty`) and would then fail or
    empty the loader's inserts; their live views keep the catalog's stages at read time. -#}
{% macro game_quarantine_reasons(stage_catalog=true) -%}
    {%- set stage_event = "event_type in ('game.stage_start', 'game.stage_clear', 'game.stage_fail')" -%}
    {%- set fields = 'Tuple(chapter Nullable(Float64), stage Nullable(Float64), mode Nullable(String), '
        ~ 'clear_time_ms Nullable(Float64), score Nullable(Float64), moves Nullable(Float64), '
        ~ 'wildcards_used Nullable(Float64), elapsed_ms Nullable(Float64), duration_ms Nullable(Float64))' -%}
    arrayMap(
        field -> arrayFilter(reason -> reason != '', [
            if({{ quarantine_ts_outside_calendar() }}, 'ts_outside_calendar', ''),
            {%- if stage_catalog %}
            if(
                {{ stage_event }}
                and (tupleElement(field, 'chapter'), tupleElement(field, 'stage')) not in (
                    select toFloat64(catalog.chapter_number), toFloat64(catalog.stage_number)
                    from {{ ref('stg_game_catalog__stages') }} as catalog
                ),
                'stage_not_in_catalog',
                ''
            ),
            {%- endif %}
            if(
                {{ stage_event }} and tupleElement(field, 'mode') not in ('story', 'time_attack'),
                'game_mode_unknown',
                ''
            ),
            {%- for name in ['clear_time_ms', 'score', 'moves', 'wildcards_used', 'elapsed_ms'] %}
            if(tupleElement(field, '{{ name }}') not between 0 and 4294967295, '{{ name }}_out_of_range', ''),
            {%- endfor %}
            if(
                tupleElement(field, 'duration_ms') not between 0 and 18446744073709551615.0,
                'duration_ms_out_of_range',
                ''
            )
        ]),
        [JSONExtract(payload, '{{ fields }}')]
    )[1]
{%- endmacro %}

{#- Shop purchases carry a known status ('completed', 'failed') and a price in cents from 0 up. -#}
{% macro economy_quarantine_reasons() -%}
    arrayMap(
        field -> arrayFilter(reason -> reason != '', [
            if({{ quarantine_ts_outside_calendar() }}, 'ts_outside_calendar', ''),
            if(
                event_type = 'shop.purchase' and tupleElement(field, 'status') not in ('completed', 'failed'),
                'purchase_status_unknown',
                ''
            ),
            if(event_type = 'shop.purchase' and tupleElement(field, 'price_cents') < 0, 'price_cents_negative', ''),
            if(
                event_type = 'shop.purchase' and tupleElement(field, 'price_cents') >= 1e15,
                'price_cents_too_large',
                ''
            ),
            if(
                tupleElement(field, 'duration_ms') not between 0 and 18446744073709551615.0,
                'duration_ms_out_of_range',
                ''
            )
        ]),
        [JSONExtract(
            payload, 'Tuple(status Nullable(String), price_cents Nullable(Float64), duration_ms Nullable(Float64))'
        )]
    )[1]
{%- endmacro %}

{#- The order event fields the rules read, in one parse (stg_orders__quarantined_events reads
    order_id and version from the same expression, which ClickHouse then evaluates once). -#}
{% macro orders_quarantine_fields() -%}
    JSONExtract(
        payload, 'Tuple(order_id String, version Int64, status Nullable(String), amount_cents Nullable(Float64))'
    )
{%- endmacro %}

{#- Order events carry a status of the nine of the order state machine (deletes carry none) and an
    amount in cents from 0 up. stg_orders__quarantined_events adds the rules over an order's
    versions. -#}
{% macro orders_quarantine_reasons() -%}
    arrayMap(
        field -> arrayFilter(reason -> reason != '', [
            if({{ quarantine_ts_outside_calendar() }}, 'ts_outside_calendar', ''),
            if(
                tupleElement(field, 'status') not in (
                    'PENDING', 'CONFIRMED', 'PROCESSING', 'SHIPPED', 'DELIVERED', 'CANCELLED', 'REFUNDED', 'FAILED',
                    'COMPLETED'
                ),
                'order_status_unknown',
                ''
            ),
            if(tupleElement(field, 'amount_cents') < 0, 'amount_cents_negative', ''),
            if(tupleElement(field, 'amount_cents') >= 1e15, 'amount_cents_too_large', '')
        ]),
        [{{ orders_quarantine_fields() }}]
    )[1]
{%- endmacro %}

{#- The condition a staging view keeps its events by, reading base_<source>__events. Evaluating the rules on every read costs
    a parse of every payload per read (some 20 models read staging: a whole build took a third
    longer), so the run's quarantine table holds the verdicts: an event loaded up to
    base_raw__quarantine_checked_through (the newest loaded_at when the run began, less
    quarantine_lookback_minutes for inserts that became visible late) is kept unless the
    quarantine table has it; a later one (loaded since, or re-delivered since) is kept when the
    row-wise rules find nothing (`or` evaluates them only for the later ones). The rules over
    several events (an order's versions, an id in another domain) thus act from the run's
    tables on: an event loaded during a run, after them, meets them in the next run. -#}
{% macro not_quarantined(source_name) -%}
    event_id not in (
        select quarantined.event_id from {{ ref('stg_' ~ source_name ~ '__quarantined_events') }} as quarantined
    )
    and (
        loaded_at <= (
            select checked.checked_through from {{ ref('base_raw__quarantine_checked_through') }} as checked
            where checked.domain = '{{ source_name }}'
        )
        or empty(quarantine_reasons)
    )
{%- endmacro %}

{#- The event ids of every source's quarantine model. -#}
{% macro quarantined_event_ids() -%}
    {%- for source_name in ['clickstream', 'game', 'economy', 'orders'] %}
    select event_id from {{ ref('stg_' ~ source_name ~ '__quarantined_events') }}
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
{%- endmacro %}

{#- Pre-hook of fct_events (incremental by event_id). An event it already holds can become
    quarantined later (re-delivered with other content, or an event that arrived since clashes
    with it), and an incremental run only replaces the events it reads: this deletes them. When
    nothing is quarantined it costs one count of the (empty) quarantine tables. -#}
{% macro delete_quarantined_events() -%}
    {%- if execute and is_incremental() -%}
        {%- set quarantined = run_query('select count() from (' ~ quarantined_event_ids() ~ ')') -%}
        {%- if quarantined.columns[0].values()[0] > 0 -%}
            delete from {{ this }} where event_id in ({{ quarantined_event_ids() }})
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{#- The config of a base model (base_<source>__events), in one place: an incremental table with
    one row per distinct event_id. Use: {{ config(**base_events_config()) }} -#}
{% macro base_events_config() -%}
    {{ return({
        'materialized': 'incremental',
        'incremental_strategy': 'delete+insert',
        'unique_key': 'event_id',
        'order_by': 'event_id',
    }) }}
{%- endmacro %}

{#- The raw columns a base model keeps, in order. -#}
{% macro base_event_columns() -%}
    {{ return([
        'event_id', 'event_type', 'schema_version', 'user_id', 'session_id', 'source_service', 'source_host',
        'sequence', 'dedupe_key', 'payload', 'ts', 'ingested_at', 'loaded_at', 'kafka_topic', 'kafka_partition',
        'kafka_offset', 'kafka_topic_id',
    ]) }}
{%- endmacro %}

{#- The whole select of a base model (base_<source>__events): one row per distinct event_id, the
    latest delivery (the highest ingested_at, then the last loaded, as the raw table's
    ReplacingMergeTree keeps), its columns, and `quarantine_reasons`: the source's row-wise rules
    (`row_rules`, e.g. clickstream_quarantine_reasons()) followed by the event's clashes with
    other domains (base_raw__cross_domain_conflicts).

    A first build (or --full-refresh) reads the raw table with FINAL. An incremental run reads only
    the deliveries loaded since the newest row it holds (less `incremental_lookback_minutes`, for
    inserts that became visible after the last run read the table), collapses them with the rows
    it already holds for the same ids (instead of FINAL over all history), and also re-judges the
    rows it holds whose ids now clash with another domain (an event that arrived since in another
    domain quarantines both); delete+insert then replaces those ids' rows. So the rules and the
    payload parse run once per delivery, and a run costs what was loaded since the last one. -#}
{% macro base_events(domain, raw_table, row_rules) -%}
{%- set columns = base_event_columns() | join(', ') -%}
with conflicts as (

    select * from {{ ref('base_raw__cross_domain_conflicts') }}
    where domain = '{{ domain }}'

),

{% if is_incremental() %}
new_deliveries as (

    select {{ columns }}
    from {{ source('raw', raw_table) }}
    where loaded_at > {{ incremental_high_water_mark() }}

),

-- the deliveries of those ids already held, and the held events that clash with another
-- domain (a handful: the conflicts table holds only the clashing ids)
held_events as (

    select {{ columns }}
    from {{ this }} as built_events
    where
        built_events.event_id in (select new_deliveries.event_id from new_deliveries)
        or built_events.event_id in (select conflicts.event_id from conflicts)

),

source as (

    select *
    from (
        select * from new_deliveries
        union all
        select * from held_events
    )
    order by event_id asc, ingested_at desc, loaded_at desc
    limit 1 by event_id

),
{% else %}
source as (

    select {{ columns }} from {{ deduplicated(source('raw', raw_table)) }}

),
{% endif %}

final as (

    select
        {{ columns }},
        arrayConcat(
            {{ row_rules }},
            {%- for conflict in ['event_id_in_another_domain', 'customer_id_is_a_player_id'] %}
            if(
                event_id in (
                    select conflicts.event_id from conflicts
                    where conflicts.conflict = '{{ conflict }}'
                ),
                ['{{ conflict }}'],
                []
            ){{ ',' if not loop.last }}
            {%- endfor %}
        ) as quarantine_reasons
    from source

)

select * from final
{%- endmacro %}

{#- The select of a quarantine table (stg_<source>__quarantined_events): the events of `events`
    (a base view, or a CTE that adds reasons) with a reason, in the columns the warn test and
    an analyst read. -#}
{% macro quarantined_events(events, reasons='quarantine_reasons') -%}
    select
        event_id,
        event_type,
        user_id,
        session_id,
        ts,
        ingested_at,
        loaded_at,
        {{ reasons }} as quarantine_reasons,
        payload,
        kafka_topic,
        kafka_partition,
        kafka_offset
    from {{ events }}
    where notEmpty({{ reasons }})
{%- endmacro %}
