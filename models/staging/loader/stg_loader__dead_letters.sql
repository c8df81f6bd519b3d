-- Messages the loader rejected, one row per Kafka message (topic, partition, offset).
with source as (

    select * from {{ deduplicated(source('raw', 'dead_letters')) }}

),

renamed as (

    select
        kafka_topic,
        kafka_partition,
        kafka_offset,
        kafka_topic_id,
        kafka_key,
        raw_value,
        error as error_message,
        failed_at,
        toDate(failed_at) as failed_date
    from source

)

select * from renamed
