{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='domain, session_entity_key',
        order_by='(domain, session_entity_key, session_start_at)',
        partition_by='domain'
    )
}}

-- Sessions: events of one entity (clickstream session_id, or user for game and economy) belong
-- to one session until the gap since the previous event of that entity is MORE than the
-- domain's inactivity gap (a gap of exactly the threshold stays in the session).
--
-- Incremental runs recompute sessions as units, as Snowplow's packages do. Events loaded since
-- the last run (less a lookback window, for batches that landed out of order) mark their
-- entities as touched. For each touched entity, every session from the one containing its
-- earliest new event onwards is recomputed from events; its earlier sessions cannot change
-- (they ended more than a gap before that session began) and are carried over as they were.
-- delete+insert then replaces the entity's sessions, so a late event that bridges two
-- sessions merges them and no orphan remains. The result equals a full refresh.
--
-- is_bot: an event of the session carried a bot signal (int_session_events_unioned, or a
-- high-frequency click: events_with_gaps), a bot
-- anomaly's window of the clickstream session overlaps it, or a bot anomaly flagged the game
-- session's player (types in var bot_anomaly_types, as dim_users.is_bot). It is set when the
-- session is (re)computed: a player flagged later by a burst in a newer session keeps is_bot
-- false on sessions carried over unchanged until a full refresh (dim_users.is_bot is current).

{%- set session_columns = [
    'session_id', 'domain', 'session_entity_key', 'session_start_at', 'session_end_at',
    'session_date', 'duration_seconds', 'event_count', 'click_count', 'purchase_count', 'revenue',
    'stage_clear_count', 'stage_fail_count', 'is_bot', 'max_loaded_at'
] %}

with events as (

    select * from {{ ref('int_session_events_unioned') }}

),

-- flagged windows of a type in var bot_anomaly_types (macros/exclude_bots.sql)
bot_click_windows as (

    select
        session_id as session_entity_key,
        window_start,
        window_end
    from {{ ref('clickstream_anomalies') }}
    where {{ bot_anomaly_type_condition() }}

),

bot_players as (

    {{ bot_user_ids() }}

),

{% if is_incremental() %}

    last_run as (

        -- (macros/incremental_manifest.sql)
        select {{ incremental_high_water_mark('max_loaded_at') }} as new_after

    ),

    touched_entities as (

        select
            events.domain,
            events.session_entity_key,
            min(events.ts) as earliest_new_event_at
        from events
        -- (a scalar subquery, not a join: the condition then reaches down to the base tables)
        where events.loaded_at > (select last_run.new_after from last_run)
        group by events.domain, events.session_entity_key

    ),

    existing_sessions as (

        select built_sessions.*
        from {{ this }} as built_sessions
        inner join touched_entities
            on
                built_sessions.domain = touched_entities.domain
                and built_sessions.session_entity_key = touched_entities.session_entity_key

    ),

    recompute_boundaries as (

    -- Where recomputing starts per entity: the start of the existing session that contains
    -- (or last precedes) the earliest new event; the new event itself when none does.
        select
            touched_entities.domain,
            touched_entities.session_entity_key,
            if(
                countIf(existing_sessions.session_start_at <= touched_entities.earliest_new_event_at) > 0,
                maxIf(
                    existing_sessions.session_start_at,
                    existing_sessions.session_start_at <= touched_entities.earliest_new_event_at
                ),
                touched_entities.earliest_new_event_at
            ) as recompute_from
        from touched_entities
        left join existing_sessions
            on
                touched_entities.domain = existing_sessions.domain
                and touched_entities.session_entity_key = existing_sessions.session_entity_key
        group by
            touched_entities.domain,
            touched_entities.session_entity_key,
            touched_entities.earliest_new_event_at

    ),

    unchanged_sessions as (

        select existing_sessions.*
        from existing_sessions
        inner join recompute_boundaries
            on
                existing_sessions.domain = recompute_boundaries.domain
                and existing_sessions.session_entity_key = recompute_boundaries.session_entity_key
        where existing_sessions.session_start_at < recompute_boundaries.recompute_from

    ),

    events_to_sessionize as (

        select events.*
        from events
        inner join recompute_boundaries
            on
                events.domain = recompute_boundaries.domain
                and events.session_entity_key = recompute_boundaries.session_entity_key
        where
            (events.domain, events.session_entity_key) in (
                select recompute_boundaries.domain, recompute_boundaries.session_entity_key
                from recompute_boundaries
            )
            and events.ts >= recompute_boundaries.recompute_from

    ),

{% else %}

    events_to_sessionize as (

        select * from events

    ),

{% endif %}

-- The high-frequency click signal: a click among at least `high_frequency_min_clicks` clicks of
-- its session in one epoch-aligned `high_frequency_window_seconds` window. Such a window lies
-- inside one session (sessions are apart by more than the inactivity gap), so counting over the
-- events recomputed gives the same count as over all events.
events_with_gaps as (

    select
        *,
        toUInt8(
            is_click = 1
            and countIf(is_click = 1) over (
                partition by
                    domain,
                    session_entity_key,
                    intDiv(toUnixTimestamp(ts), {{ var('high_frequency_window_seconds') }})
            ) >= {{ var('high_frequency_min_clicks') }}
        ) as is_high_frequency_click,
        lagInFrame(toNullable(ts)) over (
            partition by domain, session_entity_key
            order by ts asc, event_id asc
            rows between unbounded preceding and current row
        ) as previous_event_at,
        multiIf(
            domain = 'clickstream', {{ var('session_inactivity_gap_minutes')['clickstream'] }},
            domain = 'game', {{ var('session_inactivity_gap_minutes')['game'] }},
            {{ var('session_inactivity_gap_minutes')['economy'] }}
        ) * 60000 as inactivity_gap_ms
    from events_to_sessionize

),

events_numbered as (

    select
        *,
        sum(
            toUInt32(previous_event_at is null or dateDiff('millisecond', previous_event_at, ts) > inactivity_gap_ms)
        ) over (
            partition by domain, session_entity_key
            order by ts asc, event_id asc
            rows between unbounded preceding and current row
        ) as session_number
    from events_with_gaps

),

recomputed_sessions as (

    select
        domain,
        session_entity_key,
        min(ts) as session_start_at,
        concat(domain, ':', session_entity_key, ':', toString(toUnixTimestamp64Milli(session_start_at))) as session_id,
        max(ts) as session_end_at,
        toDate(session_start_at) as session_date,
        dateDiff('millisecond', session_start_at, session_end_at) / 1000 as duration_seconds,
        count() as event_count,
        sum(is_click) as click_count,
        sum(is_purchase) as purchase_count,
        sum(revenue) as revenue,
        sum(is_stage_clear) as stage_clear_count,
        sum(is_stage_fail) as stage_fail_count,
        toBool(max(is_bot_signal) or max(is_high_frequency_click)) as is_bot,
        max(loaded_at) as max_loaded_at
    from events_numbered
    group by domain, session_entity_key, session_number

),

-- per clickstream session id, its flagged bot windows (a handful of sessions)
bot_windows_by_session as (

    select
        session_entity_key,
        groupArray((window_start, window_end)) as windows
    from bot_click_windows
    group by session_entity_key

),

recomputed_sessions_flagged as (

    select
        recomputed_sessions.session_id,
        recomputed_sessions.domain,
        recomputed_sessions.session_entity_key,
        recomputed_sessions.session_start_at,
        recomputed_sessions.session_end_at,
        recomputed_sessions.session_date,
        recomputed_sessions.duration_seconds,
        recomputed_sessions.event_count,
        recomputed_sessions.click_count,
        recomputed_sessions.purchase_count,
        recomputed_sessions.revenue,
        recomputed_sessions.stage_clear_count,
        recomputed_sessions.stage_fail_count,
        -- (a bot window overlaps the session: window [start, end) against [first, last] event)
        toBool(
            recomputed_sessions.is_bot
            or recomputed_sessions.domain = 'clickstream' and arrayExists(
                bot_window -> bot_window.1 <= recomputed_sessions.session_end_at  -- noqa: RF02
                and recomputed_sessions.session_start_at < bot_window.2,  -- noqa: RF02
                bot_windows_by_session.windows
            )
            or recomputed_sessions.domain = 'game'
            and recomputed_sessions.session_entity_key in (select bot_players.user_id from bot_players)
        ) as is_bot,
        recomputed_sessions.max_loaded_at
    from recomputed_sessions
    left join bot_windows_by_session
        on recomputed_sessions.session_entity_key = bot_windows_by_session.session_entity_key

),

final as (

    select {{ session_columns | join(', ') }}
    from recomputed_sessions_flagged

    {% if is_incremental() %}

        union all

        select {{ session_columns | join(', ') }}
        from unchanged_sessions

    {% endif %}

)

select * from final
