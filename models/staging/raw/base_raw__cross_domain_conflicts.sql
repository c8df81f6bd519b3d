{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        order_by='(domain, event_id)',
        post_hook="{{ record_loaded_through([
            source('raw', 'raw_clickstream_events'), source('raw', 'raw_game_events'),
            source('raw', 'raw_economy_events'), source('raw', 'raw_orders_events')]) }}"
    )
}}

-- Events whose identity clashes with another domain's, which the base views quarantine: an
-- event_id found in the raw tables of two or more domains (each is quarantined: which event the
-- id names cannot be told), and an order event whose customer_id is also a player's user_id
-- (dim_users has one row, and one user_type, per id). A table built once per run, so the
-- staging views, read by many models, test membership in a small set instead of reading
-- every raw table. It reads every delivery (no FINAL): ids do not change between deliveries.
-- Incremental (append; a conflict never goes away, as ids do not change): a run looks up the ids
-- and users of the deliveries loaded since its last run (the incremental manifest) in every raw
-- table by key, instead of grouping every id of the history, and adds the conflicts it has not
-- recorded yet.

with raw_events as (

    select
        'clickstream' as domain,
        event_id,
        user_id,
        loaded_at
    from {{ source('raw', 'raw_clickstream_events') }}
    union all
    select
        'game' as domain,
        event_id,
        user_id,
        loaded_at
    from {{ source('raw', 'raw_game_events') }}
    union all
    select
        'economy' as domain,
        event_id,
        user_id,
        loaded_at
    from {{ source('raw', 'raw_economy_events') }}
    union all
    select
        'orders' as domain,
        event_id,
        user_id,
        loaded_at
    from {{ source('raw', 'raw_orders_events') }}

),

{% if is_incremental() %}

    new_events as (

        select * from raw_events
        where loaded_at > {{ loaded_after() }}

    ),

    -- every delivery, in any domain, of an id delivered since the last run (by the sorting key)
    candidate_events as (

        select distinct
            domain,
            event_id
        from raw_events
        where event_id in (select new_events.event_id from new_events)

    ),

{% else %}

    -- a 64-bit hash of the id narrows the candidates cheaply; the ids are compared below
    shared_id_hashes as (

        select cityHash64(event_id) as event_id_hash
        from raw_events
        group by event_id_hash
        having min(domain) != max(domain)

    ),

    candidate_events as (

        select distinct
            domain,
            event_id
        from raw_events
        where cityHash64(event_id) in (select shared_id_hashes.event_id_hash from shared_id_hashes)

    ),

{% endif %}

shared_event_ids as (

    select event_id
    from candidate_events
    group by event_id
    having count() > 1

),

events_in_several_domains as (

    select
        domain,
        event_id,
        'event_id_in_another_domain' as conflict
    from candidate_events
    where event_id in (select shared_event_ids.event_id from shared_event_ids)

),

{% if is_incremental() %}

    -- the order events of a customer who is also a player, where the customer or the player is
    -- new: new orders' customers among all players, and all orders' customers among new players
    orders_of_players as (

        select distinct
            orders.domain,
            orders.event_id,
            'customer_id_is_a_player_id' as conflict
        from raw_events as orders
        where
            orders.domain = 'orders'
            and (
                orders.event_id in (select new_events.event_id from new_events where new_events.domain = 'orders')
                and orders.user_id in (
                    select players.user_id from raw_events as players
                    where
                        players.domain in ('game', 'economy')
                        and players.user_id in (
                            select new_events.user_id from new_events where new_events.domain = 'orders'
                        )
                )
                or orders.user_id in (
                    select new_events.user_id from new_events
                    where new_events.domain in ('game', 'economy') and new_events.user_id is not null
                )
            )

    ),

{% else %}

    player_ids as (

        select distinct user_id
        from raw_events
        where domain in ('game', 'economy') and user_id is not null

    ),

    orders_of_players as (

        select distinct
            domain,
            event_id,
            'customer_id_is_a_player_id' as conflict
        from raw_events
        where domain = 'orders' and user_id in (select player_ids.user_id from player_ids)

    ),

{% endif %}

found as (

    select * from events_in_several_domains
    union all
    select * from orders_of_players

),

final as (

    select * from found
    {% if is_incremental() %}
        -- (the conflicts already recorded)
        where (found.domain, found.event_id, found.conflict) not in (
            select recorded.domain, recorded.event_id, recorded.conflict from {{ this }} as recorded
        )
    {% endif %}

)

select * from final
