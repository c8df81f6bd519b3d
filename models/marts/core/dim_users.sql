{{
    config(
        materialized='table',
        engine='MergeTree()',
        order_by='user_id'
    )
}}

-- One row per known user: game players (game and economy events) and commerce customers
-- (order events). Clickstream visitors are anonymous and have no row. `is_bot` comes from
-- behaviour (any session flagged by sessionization), never from what a client declared.
-- Country and platform are the player's current profile (type 1); `snp_users` keeps history.

with events as (

    select * from {{ ref('int_events_unioned') }}
    where user_id is not null

),

sessions as (

    select * from {{ ref('fct_sessions') }}

),

profiles as (

    select * from {{ ref('int_user_profiles_current') }}

),

users as (

    select
        assumeNotNull(user_id) as user_id,
        if(domain = 'orders', 'customer', 'player') as user_type,
        min(ts) as first_seen_at,
        max(ts) as last_seen_at,
        count() as event_count
    from events
    group by user_id, user_type

),

bot_users as (

    select session_entity_key as user_id
    from sessions
    where domain in ('game', 'economy')
    group by session_entity_key
    having max(is_bot)

),

final as (

    select
        users.user_id,
        users.user_type,
        profiles.signed_up_at,
        profiles.country,
        profiles.platform,
        profiles.declared_persona,
        users.first_seen_at,
        users.last_seen_at,
        users.event_count,
        toBool(users.user_id in (select bot_users.user_id from bot_users)) as is_bot
    from users
    left join profiles on users.user_id = profiles.user_id

)

select * from final
