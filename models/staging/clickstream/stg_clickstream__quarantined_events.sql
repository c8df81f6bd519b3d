{{
    config(
        materialized='table',
        order_by='event_id'
    )
}}

-- depends_on: {{ ref('base_raw__quarantine_checked_through') }}

-- Clickstream events (clicks and buys) held back from staging, one row per event, with the
-- reasons (the rules are in macros/quarantine.sql). A table, rebuilt every run after
-- base_raw__quarantine_checked_through: the staging views take its verdicts for the events
-- loaded up to then (macro not_quarantined); the warn test and fct_events' pre-hook read it.
{{ quarantined_events(ref('base_clickstream__events')) }}
