-- Every event that belongs to a session, with the entity it is sessionized by: the source
-- session_id for clickstream, the user for game and economy (from int_events_unioned). Orders
-- are not sessionized. `is_bot_signal` marks a stage cleared faster than `impossible_clear_ms`
-- or above the stage's max score, behaviour no human produces (the high-frequency click signal,
-- which counts a session's clicks per window, is computed by fct_sessions over the events it
-- recomputes).
--
-- A table sorted by entity, so fct_sessions reads an entity's events through the primary key.
-- Incremental like fct_events: events loaded since the newest row it holds (less
-- incremental_lookback_minutes) replace their rows by event_id; the pre-hook deletes the
-- events quarantined since.

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='event_id',
        order_by='(domain, session_entity_key, ts, event_id)',
        pre_hook="{{ delete_quarantined_events() }}"
    )
}}

-- depends_on: {{ ref('stg_clickstream__quarantined_events') }}
-- depends_on: {{ ref('stg_game__quarantined_events') }}
-- depends_on: {{ ref('stg_economy__quarantined_events') }}
-- depends_on: {{ ref('stg_orders__quarantined_events') }}

with events as (

    select * from {{ ref('int_events_unioned') }}
    where
        domain in ('clickstream', 'game', 'economy')
    {% if is_incremental() %}
        and loaded_at > {{ incremental_high_water_mark() }}
    {% endif %}

),

stages as (

    select * from {{ ref('stg_game_catalog__stages') }}

),

final as (

    select
        events.domain,
        assumeNotNull(
            if(events.domain = 'clickstream', events.session_id, events.user_id)
        ) as session_entity_key,
        events.event_id,
        events.event_type,
        events.ts,
        events.loaded_at,
        toUInt8(events.event_type = 'clickstream.click') as is_click,
        events.is_purchase,
        coalesce(events.revenue, toDecimal64(0, 2)) as revenue,
        toUInt8(events.event_type = 'game.stage_clear') as is_stage_clear,
        toUInt8(events.event_type = 'game.stage_fail') as is_stage_fail,
        -- (an unknown stage has a null max_score: no overflow can be judged)
        toUInt8(
            coalesce(
                events.event_type = 'game.stage_clear'
                and (
                    events.clear_time_ms < {{ var('impossible_clear_ms') }}
                    or events.score > stages.max_score
                ),
                0
            )
        ) as is_bot_signal
    from events
    left join stages
        on events.stage_key = stages.stage_key

)

select * from final
