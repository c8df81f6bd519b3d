{{ config(order_by='(claim_event_type, user_id)') }}

-- One row per duplicated claim: the same claim (claim event type, user, live event or mission,
-- progress_version) seen under more than one distinct event_id, e.g. a double tap. Re-delivered
-- copies of one event share its event_id and are not duplicates here. Bots are kept (flagged):
-- this is an anomaly mart.

with claims as (

    select * from {{ ref('stg_economy__events') }}
    where event_type in ('event.claim', 'mission.claim')

),

users as (

    select * from {{ ref('dim_users') }}

),

claim_groups as (

    select
        event_type as claim_event_type,
        user_id,
        assumeNotNull(coalesce(live_event_id, mission_id)) as claim_entity_id,
        assumeNotNull(progress_version) as claim_progress_version,
        uniqExact(event_id) as claim_count,
        arraySort(groupUniqArray(event_id)) as event_ids,
        min(ts) as first_claimed_at,
        max(ts) as last_claimed_at,
        sum(reward_gold) as reward_gold_claimed
    from claims
    group by claim_event_type, user_id, claim_entity_id, claim_progress_version
    having claim_count > 1

),

final as (

    select
        claim_groups.claim_event_type,
        claim_groups.user_id,
        claim_groups.claim_entity_id,
        claim_groups.claim_progress_version as progress_version,
        claim_groups.claim_count,
        claim_groups.event_ids,
        claim_groups.first_claimed_at,
        claim_groups.last_claimed_at,
        claim_groups.reward_gold_claimed,
        coalesce(users.is_bot, false) as is_bot
    from claim_groups
    left join users on claim_groups.user_id = users.user_id

)

select * from final
