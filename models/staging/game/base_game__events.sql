-- Puzzle game client events as the loader stored them, one row per distinct event_id (FINAL collapses
-- re-deliveries into the latest), with `quarantine_reasons`: why the event breaks a staging
-- invariant (macros/quarantine.sql), empty for a clean event. The stg_ views keep the clean
-- events, stg_game__quarantined_events the others.

{{ base_events('game', 'raw_game_events', game_quarantine_reasons()) }}
