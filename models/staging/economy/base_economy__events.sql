-- Game economy events as the loader stored them, one row per distinct event_id (re-deliveries
-- collapse into the latest; an incremental table, macros/quarantine.sql base_events),
-- with `quarantine_reasons`: why the event breaks a staging
-- invariant (macros/quarantine.sql), empty for a clean event. The stg_ views keep the clean
-- events, stg_economy__quarantined_events the others.

{{ config(**base_events_config()) }}

{{ base_events('economy', 'raw_economy_events', economy_quarantine_reasons()) }}
