-- Game economy events as the loader stored them, one row per distinct event_id (FINAL collapses
-- re-deliveries into the latest), with `quarantine_reasons`: why the event breaks a staging
-- invariant (macros/quarantine.sql), empty for a clean event. The stg_ views keep the clean
-- events, stg_economy__quarantined_events the others.
with source as (

    select * from {{ deduplicated(source('raw', 'raw_economy_events')) }}

),

conflicts as (

    select * from {{ ref('base_raw__cross_domain_conflicts') }}
    where domain = 'economy'

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
            {{ economy_quarantine_reasons() }},
            if(event_id in (select conflicts.event_id from conflicts), ['event_id_in_another_domain'], [])
        ) as quarantine_reasons
    from source

)

select * from final
