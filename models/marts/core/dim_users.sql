{{ config(order_by='user_id') }}

-- One row per known user: game players (game and economy events) and commerce customers
-- (order events). Clickstream visitors are anonymous and have no row. `is_bot` comes from
-- behaviour (a game anomaly of a type in var `bot_anomaly_types`), never from what a client
-- declared.
-- Country and platform are the player's current profile (type 1); `snp_users` keeps history.
-- A customer's display name, country and signup time come from the orders service's users table
-- (CDC, stg_oltp__users); a customer PostgreSQL does not know keeps what the events say.

with events as (

    select * from {{ ref('int_events_unioned') }}
    where user_id is not null

),

profiles as (

    select * from {{ ref('int_user_profiles_current') }}

),

oltp_users as (

    select * from {{ ref('stg_oltp__users') }}

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

customer_profiles as (

    select
        user_id as customer_id,
        display_name,
        country,
        signed_up_at
    from oltp_users

),

{#- a customer the orders service knows (players keep the profile of their events) -#}
{% set is_known_customer = "users.user_type = 'customer' and customer_profiles.customer_id is not null" %}

final as (

    select
        -- named: over two joins whose tables all have a user_id, ClickHouse calls it `users.user_id`
        users.user_id as user_id,  -- noqa: AL09
        users.user_type,
        if({{ is_known_customer }}, customer_profiles.signed_up_at, profiles.signed_up_at) as signed_up_at,
        if({{ is_known_customer }}, customer_profiles.country, profiles.country) as country,
        profiles.platform,
        profiles.declared_persona,
        users.first_seen_at,
        users.last_seen_at,
        users.event_count,
        toBool(users.user_id in ({{ bot_user_ids() }})) as is_bot,
        if({{ is_known_customer }}, customer_profiles.display_name, null) as display_name
    from users
    left join profiles on users.user_id = profiles.user_id
    left join customer_profiles on users.user_id = customer_profiles.customer_id

)

select * from final
