{{
    config(
        materialized='table',
        order_by='user_id'
    )
}}

-- One row per player with a profile: the current value of each profile attribute, taken from the
-- latest auth event that set it (signup, then profile updates; a later event without a field
-- keeps the previous value). `profile_updated_at` is the time of the latest such event, which
-- the users snapshot uses as the start of a new version.

with economy_events as (

    select * from {{ ref('stg_economy__events') }}

),

profile_events as (

    select
        user_id,
        event_id,
        event_type,
        ts,
        country,
        platform,
        declared_persona
    from economy_events
    where event_type in ('auth.signup', 'auth.profile_updated')

),

final as (

    select
        user_id,
        minIfOrNull(ts, event_type = 'auth.signup') as signed_up_at,
        argMaxIf(country, (ts, event_id), country is not null) as country,
        argMaxIf(platform, (ts, event_id), platform is not null) as platform,
        argMaxIf(declared_persona, (ts, event_id), declared_persona is not null) as declared_persona,
        countIf(event_type = 'auth.profile_updated') as profile_update_count,
        max(ts) as profile_updated_at
    from profile_events
    group by user_id

)

select * from final
