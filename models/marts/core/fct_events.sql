{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='event_id',
        engine='MergeTree()',
        partition_by='toYYYYMM(event_date)',
        order_by='(domain, event_date, event_type, event_id)',
        pre_hook="{{ delete_quarantined_events() }}"
    )
}}

-- depends_on: {{ ref('stg_clickstream__quarantined_events') }}
-- depends_on: {{ ref('stg_game__quarantined_events') }}
-- depends_on: {{ ref('stg_economy__quarantined_events') }}
-- depends_on: {{ ref('stg_orders__quarantined_events') }}

-- One row per distinct event of every domain, with conformed keys. `latency_ms` is how long the
-- pipeline took to receive the event after the client stamped it (server/ingest time minus ts).
-- Incremental: events loaded since the last run (less `fct_events_lookback_minutes`) replace
-- their rows by event_id, so a re-delivered event's latest version wins as in a full refresh.
-- Quarantined events are not in staging; the pre-hook deletes those an earlier run stored (the
-- quarantine models above are built first, hence the depends_on).

with clicks as (

    select * from {{ ref('stg_clickstream__clicks') }}

),

purchases as (

    select * from {{ ref('stg_clickstream__purchases') }}

),

game_events as (

    select * from {{ ref('stg_game__events') }}

),

economy_events as (

    select * from {{ ref('stg_economy__events') }}

),

order_events as (

    select * from {{ ref('stg_orders__order_events') }}

),

unioned as (

    select
        event_id,
        'clickstream.click' as event_type,
        'clickstream' as domain,
        cast(null, 'Nullable(String)') as user_id,
        cast(session_id, 'Nullable(String)') as session_id,
        cast(item_id, 'Nullable(UInt64)') as item_id,
        cast(null, 'Nullable(String)') as product_id,
        cast(null, 'Nullable(UInt16)') as stage_key,
        cast(null, 'Nullable(String)') as order_id,
        cast(null, 'Nullable(Decimal64(2))') as revenue,
        clicked_at as ts,
        ingested_at,
        loaded_at
    from clicks

    union all

    select
        event_id,
        'clickstream.purchase' as event_type,
        'clickstream' as domain,
        cast(null, 'Nullable(String)') as user_id,
        cast(session_id, 'Nullable(String)') as session_id,
        cast(item_id, 'Nullable(UInt64)') as item_id,
        cast(null, 'Nullable(String)') as product_id,
        cast(null, 'Nullable(UInt16)') as stage_key,
        cast(null, 'Nullable(String)') as order_id,
        cast(price * quantity, 'Nullable(Decimal64(2))') as revenue,
        purchased_at as ts,
        ingested_at,
        loaded_at
    from purchases

    union all

    select
        event_id,
        event_type,
        'game' as domain,
        cast(user_id, 'Nullable(String)') as user_id,
        game_session_id as session_id,
        cast(null, 'Nullable(UInt64)') as item_id,
        cast(null, 'Nullable(String)') as product_id,
        cast(toUInt16(chapter_number) * 100 + stage_number, 'Nullable(UInt16)') as stage_key,
        cast(null, 'Nullable(String)') as order_id,
        cast(null, 'Nullable(Decimal64(2))') as revenue,
        ts,
        ingested_at,
        loaded_at
    from game_events

    union all

    select
        event_id,
        event_type,
        'economy' as domain,
        cast(user_id, 'Nullable(String)') as user_id,
        game_session_id as session_id,
        cast(null, 'Nullable(UInt64)') as item_id,
        product_id,
        cast(null, 'Nullable(UInt16)') as stage_key,
        cast(null, 'Nullable(String)') as order_id,
        cast(
            -- decimal arithmetic: price_cents / 100 would go through a float and lose cents
            if(event_type = 'shop.purchase' and purchase_status = 'completed', toDecimal64(price_cents, 2) / 100, null),
            'Nullable(Decimal64(2))'
        ) as revenue,
        ts,
        ingested_at,
        loaded_at
    from economy_events

    union all

    select
        event_id,
        event_type,
        'orders' as domain,
        cast(customer_id, 'Nullable(String)') as user_id,
        cast(null, 'Nullable(String)') as session_id,
        cast(null, 'Nullable(UInt64)') as item_id,
        cast(null, 'Nullable(String)') as product_id,
        cast(null, 'Nullable(UInt16)') as stage_key,
        order_id,
        cast(null, 'Nullable(Decimal64(2))') as revenue,
        ts,
        ingested_at,
        loaded_at
    from order_events

),

final as (

    select
        event_id,
        event_type,
        domain,
        user_id,
        session_id,
        item_id,
        product_id,
        stage_key,
        order_id,
        revenue,
        ts,
        toDate(ts) as event_date,
        ingested_at,
        loaded_at,
        dateDiff('millisecond', ts, ingested_at) as latency_ms,
        toBool(latency_ms > {{ var('late_event_threshold_seconds') }} * 1000) as is_late
    from unioned
    {% if is_incremental() %}
        -- (an empty table, e.g. after `dbt run --empty`, makes every event new)
        where loaded_at > (
                select
                    if(count() = 0, toDateTime64(0, 3, 'UTC'), max(built_events.loaded_at))
                    - toIntervalMinute({{ var('fct_events_lookback_minutes') }})
                from {{ this }} as built_events
            )
    {% endif %}

)

select * from final
