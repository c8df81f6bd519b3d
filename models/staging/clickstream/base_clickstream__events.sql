-- Clickstream events (clicks and buys) as the loader stored them, one row per distinct event_id (FINAL collapses
-- re-deliveries into the latest), with `quarantine_reasons`: why the event breaks a staging
-- invariant (macros/quarantine.sql), empty for a clean event. The stg_ views keep the clean
-- events, stg_clickstream__quarantined_events the others.

{{ base_events('clickstream', 'raw_clickstream_events', clickstream_quarantine_reasons()) }}
