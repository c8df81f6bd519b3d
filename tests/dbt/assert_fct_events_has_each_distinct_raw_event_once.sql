{{ config(meta={'dagster': {'ref': {'name': 'fct_events'}}}) }}
-- meta.dagster.ref: the asset this test of several relations is shown on as a Dagster check.

-- fct_events holds exactly the distinct event_ids the loader stored, less the quarantined ones:
-- re-deliveries collapse, nothing else is dropped on the way through staging, and no quarantined
-- event is in fct_events (an event id used in two domains is quarantined in both). Checked in
-- parts whose cost follows the run, not the history (a distinct count over every raw delivery
-- would cost as much as the history):
-- - every event_id loaded into a raw table during this run's window (the rows fct_events' run
--   read: __rows_of_this_run__) is in its domain's base model, which holds one row per distinct
--   event_id (a lookup by the base models' sorting key); on a first build or --full-refresh,
--   each raw table's distinct ids are counted against its base model instead;
-- - fct_events has as many rows as the base models have events that are not quarantined
--   (counted as all rows less the quarantined ids found by key);
-- - no quarantined event is in fct_events.
{%- set domains = [
    ('clickstream', 'raw_clickstream_events', 'base_clickstream__events'),
    ('game', 'raw_game_events', 'base_game__events'),
    ('economy', 'raw_economy_events', 'base_economy__events'),
    ('orders', 'raw_orders_events', 'base_orders__order_events'),
] %}

with quarantined_events as (

    {{ quarantined_event_ids() }}

),

-- noqa: disable=LT02
missing_from_base as (

    {%- set every_row = run_checks_every_row(ref('fct_events')) %}
    {%- for domain, raw_table, base_model in domains %}
    {%- if every_row %}
    -- (a first build or --full-refresh: every distinct raw id, counted, against the base model)
    select
        (select uniqExact(all_deliveries.event_id) from {{ source('raw', raw_table) }} as all_deliveries)
        - (select count() from {{ ref(base_model) }}) as event_count
    {%- else %}
    select count() as event_count
    from {{ source('raw', raw_table) }} as raw_deliveries
    where
        {{ rows_of_this_run(ref('fct_events')) | replace('loaded_at', 'raw_deliveries.loaded_at', 1) }}
        and raw_deliveries.event_id not in (
            select based.event_id from {{ ref(base_model) }} as based
            where based.event_id in (
                select recent.event_id from {{ source('raw', raw_table) }} as recent
                where {{ rows_of_this_run(ref('fct_events')) | replace('loaded_at', 'recent.loaded_at', 1) }}
            )
        )
    {%- endif %}
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}

),

expected as (

    select
        0
        {%- for domain, raw_table, base_model in domains %}
        + (select count() from {{ ref(base_model) }})
        - (
            select count() from {{ ref(base_model) }} as based
            where based.event_id in (select quarantined_events.event_id from quarantined_events)
        )
        {%- endfor %} as event_count,
        (select sum(missing_from_base.event_count) from missing_from_base) as missing_from_base_count

),

-- noqa: enable=LT02
actual as (

    select
        count() as event_count,
        countIf(event_id in (select quarantined_events.event_id from quarantined_events)) as quarantined_count
    from {{ ref('fct_events') }}

)

select
    expected.event_count as expected_events,
    actual.event_count as actual_events,
    actual.quarantined_count as quarantined_events_in_fct_events,
    expected.missing_from_base_count as raw_events_of_the_run_missing_from_base
from expected
cross join actual
where
    expected.event_count != actual.event_count
    or actual.quarantined_count != 0
    or expected.missing_from_base_count != 0
