{{ config(meta={'dagster': {'ref': {'name': 'fct_events'}}}) }}
-- meta.dagster.ref: the asset this test of several relations is shown on as a Dagster check.

-- fct_events holds exactly the distinct event_ids the loader stored: re-deliveries collapse,
-- and nothing is dropped on the way through staging.
with raw_events as (

    select event_id from {{ source('raw', 'raw_clickstream_events') }}
    union all
    select event_id from {{ source('raw', 'raw_game_events') }}
    union all
    select event_id from {{ source('raw', 'raw_economy_events') }}
    union all
    select event_id from {{ source('raw', 'raw_orders_events') }}

),

expected as (

    select uniqExact(event_id) as event_count from raw_events

),

actual as (

    select count() as event_count from {{ ref('fct_events') }}

)

select
    expected.event_count as expected_events,
    actual.event_count as actual_events
from expected
cross join actual
where expected.event_count != actual.event_count
