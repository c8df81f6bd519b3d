{{
    config(
        materialized='table',
        engine='MergeTree()',
        order_by='event_id'
    )
}}

-- depends_on: {{ ref('base_raw__quarantine_checked_through') }}

-- Puzzle game client events held back from staging, one row per event, with the
-- reasons (the rules are in macros/quarantine.sql). A table, rebuilt every run after
-- base_raw__quarantine_checked_through: the staging views take its verdicts for the events
-- loaded up to then (macro not_quarantined); the warn test and fct_events' pre-hook read it.
with quarantined_events as (

    select * from {{ ref('base_game__events') }}
    where notEmpty(quarantine_reasons)

),

final as (

    select
        event_id,
        event_type,
        user_id,
        session_id,
        ts,
        ingested_at,
        loaded_at,
        quarantine_reasons,
        payload,
        kafka_topic,
        kafka_partition,
        kafka_offset
    from quarantined_events

)

select * from final
