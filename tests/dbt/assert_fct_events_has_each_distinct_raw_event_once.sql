{{ config(meta={'dagster': {'ref': {'name': 'fct_events'}}}) }}
-- meta.dagster.ref: the asset this test of several relations is shown on as a Dagster check.

-- fct_events holds exactly the distinct event_ids the loader stored, less the quarantined ones:
-- re-deliveries collapse, nothing else is dropped on the way through staging, and no quarantined
-- event is in fct_events (an event id used in two domains is one distinct id here, and is
-- quarantined in both).
with raw_events as (

    select event_id from {{ source('raw', 'raw_clickstream_events') }}
    union all
    select event_id from {{ source('raw', 'raw_game_events') }}
    union all
    select event_id from {{ source('raw', 'raw_economy_events') }}
    union all
    select event_id from {{ source('raw', 'raw_orders_events') }}

),

quarantined_events as (

    {{ quarantined_event_ids() }}

),

expected as (

    select
        (select uniqExact(raw_events.event_id) from raw_events)
        - (select uniqExact(quarantined_events.event_id) from quarantined_events) as event_count

),

actual as (

    select
        count() as event_count,
        countIf(event_id in (select quarantined_events.event_id from quarantined_events)) as quarantined_count
    from {{ ref('fct_events') }}

)

select
    expected.event_count as expected_events,
    actual.event_count as actual_events,
    actual.quarantined_count as quarantined_events_in_fct_events
from expected
cross join actual
where expected.event_count != actual.event_count or actual.quarantined_count != 0
