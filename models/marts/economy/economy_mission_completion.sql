{{ config(order_by='mission_id') }}

-- One row per mission with any progress update or claim. completion_rate is
-- claims / progress updates; a claim is one (user, progress_version), so a double-tapped claim
-- counts once (claim_events counts every event). Bots are left out when kpi_exclude_bots is true.
-- The query is macros/claim_completion.sql, shared with economy_event_completion.

{{ claim_completion('mission_id', 'mission.progress', 'mission.claim') }}
