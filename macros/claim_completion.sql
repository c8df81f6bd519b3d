{#- The body of a completion mart (economy_event_completion, economy_mission_completion): one row
    per `entity_column` value (live_event_id, mission_id) with any progress update or claim, from
    stg_economy__events. completion_rate is claims / progress updates, where a claim is one
    (user, progress_version), so a double-tapped claim counts once (claim_events counts every
    claim event); user_claim_rate is users who claimed / users who progressed. Bots are left out
    while kpi_exclude_bots is true. -#}
{% macro claim_completion(entity_column, progress_event_type, claim_event_type) -%}

with progress_and_claims as (

    select * from {{ ref('stg_economy__events') }}
    where
        event_type in ('{{ progress_event_type }}', '{{ claim_event_type }}')
        and {{ not_a_bot_user('user_id') }}

),

final as (

    select
        assumeNotNull({{ entity_column }}) as {{ entity_column }},
        countIf(event_type = '{{ progress_event_type }}') as progress_updates,
        countIf(event_type = '{{ claim_event_type }}') as claim_events,
        uniqExactIf((user_id, progress_version), event_type = '{{ claim_event_type }}') as claims,
        uniqExactIf(user_id, event_type = '{{ progress_event_type }}') as users_progressed,
        uniqExactIf(user_id, event_type = '{{ claim_event_type }}') as users_claimed,
        if(progress_updates = 0, null, round(claims / progress_updates, 4)) as completion_rate,
        if(users_progressed = 0, null, round(users_claimed / users_progressed, 4)) as user_claim_rate
    from progress_and_claims
    group by {{ entity_column }}

)

select * from final

{%- endmacro %}
