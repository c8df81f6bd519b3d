-- Claim conversion per live event and per mission: claims / progress
-- updates (completion_rate) and players who claimed / players who progressed. The 'all' row of
-- each kind sums over its events or missions, so its players are player-event (or
-- player-mission) pairs.
with live_events as (

    select * from {{ ref('economy_event_completion') }}

),

missions as (

    select * from {{ ref('economy_mission_completion') }}

),

entities as (

    select
        'live_event' as claim_kind,
        live_event_id as entity_id,
        progress_updates,
        claims,
        users_progressed,
        users_claimed
    from live_events

    union all

    select
        'mission' as claim_kind,
        mission_id as entity_id,
        progress_updates,
        claims,
        users_progressed,
        users_claimed
    from missions

),

with_totals as (

    select
        claim_kind,
        entity_id,
        progress_updates,
        claims,
        users_progressed,
        users_claimed
    from entities

    union all

    select
        claim_kind,
        'all' as entity_id,
        sum(progress_updates) as progress_updates,
        sum(claims) as claims,
        sum(users_progressed) as users_progressed,
        sum(users_claimed) as users_claimed
    from entities
    group by claim_kind

),

final as (

    select
        claim_kind,
        entity_id,
        progress_updates,
        claims,
        if(progress_updates = 0, null, round(claims / progress_updates, 4)) as completion_rate,
        users_progressed,
        users_claimed,
        if(users_progressed = 0, null, round(users_claimed / users_progressed, 4)) as user_claim_rate
    from with_totals

)

select * from final
order by claim_kind, entity_id = 'all', entity_id
