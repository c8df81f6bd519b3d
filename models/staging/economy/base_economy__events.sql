-- Game economy events as the loader stored them, one row per distinct event_id (FINAL collapses
-- re-deliveries into the latest), with `quarantine_reasons`: why the event breaks a staging
-- invariant (macros/quarantine.sql), empty for a clean event. The stg_ views keep the clean
-- events, stg_economy__quarantined_events the others.

{{ base_events('economy', 'raw_economy_events', economy_quarantine_reasons()) }}
