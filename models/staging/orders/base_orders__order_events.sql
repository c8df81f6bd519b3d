-- Commerce order events as the loader stored them, one row per distinct event_id (re-deliveries
-- collapse into the latest; an incremental table, macros/quarantine.sql base_events),
-- with `quarantine_reasons`: the row-wise staging
-- invariants the event breaks (macros/quarantine.sql) and its clashes with other domains, empty
-- for a clean event. stg_orders__quarantined_events adds the rules over an order's events and
-- holds the quarantined events; stg_orders__order_events keeps the others.

{{ config(**base_events_config()) }}

{{ base_events('orders', 'raw_orders_events', orders_quarantine_reasons()) }}
