-- Commerce order events as the loader stored them, one row per distinct event_id (FINAL
-- collapses re-deliveries into the latest), with `quarantine_reasons`: the row-wise staging
-- invariants the event breaks (macros/quarantine.sql) and its clashes with other domains, empty
-- for a clean event. stg_orders__quarantined_events adds the rules over an order's events and
-- holds the quarantined events; stg_orders__order_events keeps the others.
with source as (

    select * from {{ deduplicated(source('raw', 'raw_orders_events')) }}

),

conflicts as (

    select * from {{ ref('base_raw__cross_domain_conflicts') }}
    where domain = 'orders'

),

final as (

    select
        event_id,
        event_type,
        schema_version,
        user_id,
        session_id,
        source_service,
        source_host,
        sequence,
        dedupe_key,
        payload,
        ts,
        ingested_at,
        loaded_at,
        kafka_topic,
        kafka_partition,
        kafka_offset,
        kafka_topic_id,
        arrayConcat(
            {{ orders_quarantine_reasons() }},
            if(
                event_id in (
                    select conflicts.event_id from conflicts
                    where conflicts.conflict = 'event_id_in_another_domain'
                ),
                ['event_id_in_another_domain'],
                []
            ),
            if(
                event_id in (
                    select conflicts.event_id from conflicts
                    where conflicts.conflict = 'customer_id_is_a_player_id'
                ),
                ['customer_id_is_a_player_id'],
                []
            )
        ) as quarantine_reasons
    from source

)

select * from final
