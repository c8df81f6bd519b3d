{{ config(order_by='(user_type, user_id, activity_date)') }}

-- One row per (user_type, user_id, activity_date): a known user (dim_users: game/economy player
-- or commerce customer) with any event in fct_events that day (UTC date of the event's ts), with
-- the user's is_bot flag. Bots are kept: the engagement marts leave them out while
-- kpi_exclude_bots is true. data_from_date / data_through_date are the first and last day with
-- any event of a user of this type, bots included (how far the data reaches is about the data,
-- not the users). Events without a user (clickstream) or of a user not in dim_users are left out.

with events as (

    select * from {{ ref('fct_events') }}
    where user_id is not null

),

users as (

    select * from {{ ref('dim_users') }}

),

user_days as (

    select distinct
        users.user_type,
        assumeNotNull(events.user_id) as user_id,
        events.event_date as activity_date,
        users.is_bot
    from events
    inner join users on events.user_id = users.user_id

),

final as (

    select
        user_type,
        user_id,
        activity_date,
        is_bot,
        min(activity_date) over (partition by user_type) as data_from_date,
        max(activity_date) over (partition by user_type) as data_through_date
    from user_days

)

select * from final
