{{ config(order_by='user_id') }}

-- One row per known user: game players (game and economy events) and commerce customers
-- (order events). Clickstream visitors are anonymous and have no row. `is_bot` comes from
-- behaviour (a game anomaly of a type in var `bot_anomaly_types`), never from what a client
-- declared.
-- Country and platform are the player's current profile (type 1); `snp_users` keeps history.

with events as (

    select * from {{ ref('int_events_unioned') }}
    where user_id is not null

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
        toBool(users.user_id in ({{ bot_user_ids() }})) as is_bot
    from users
    left join profiles on users.user_id = profiles.user_id

)

select * from final
