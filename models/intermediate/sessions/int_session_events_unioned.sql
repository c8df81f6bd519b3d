-- Every event that belongs to a session, with the entity it is sessionized by: the source
-- session_id for clickstream, the user for game and economy (from int_events_unioned). Orders
-- are not sessionized. `is_bot_signal` marks the behaviour no human produces: a stage cleared
-- faster than `impossible_clear_ms` or above the stage's max score, or a click among at least
-- `high_frequency_min_clicks` clicks of its session in one epoch-aligned
-- `high_frequency_window_seconds` window.

with events as (

    select * from {{ ref('int_events_unioned') }}
    where domain in ('clickstream', 'game', 'economy')

),

stages as (

    select * from {{ ref('stg_game_catalog__stages') }}

),

events_with_window_clicks as (

    select
        *,
        countIf(event_type = 'clickstream.click') over (
            partition by
                domain,
                session_id,
                intDiv(toUnixTimestamp(ts), {{ var('high_frequency_window_seconds') }})
        ) as session_clicks_in_window
    from events

),

final as (

    select
        clicks_counted.domain,
        assumeNotNull(
            if(clicks_counted.domain = 'clickstream', clicks_counted.session_id, clicks_counted.user_id)
        ) as session_entity_key,
        clicks_counted.event_id,
        clicks_counted.event_type,
        clicks_counted.ts,
        clicks_counted.loaded_at,
        toUInt8(clicks_counted.event_type = 'clickstream.click') as is_click,
        clicks_counted.is_purchase,
        coalesce(clicks_counted.revenue, toDecimal64(0, 2)) as revenue,
        toUInt8(clicks_counted.event_type = 'game.stage_clear') as is_stage_clear,
        toUInt8(clicks_counted.event_type = 'game.stage_fail') as is_stage_fail,
        -- (an unknown stage has a null max_score: no overflow can be judged)
        toUInt8(
            clicks_counted.event_type = 'clickstream.click'
            and clicks_counted.session_clicks_in_window >= {{ var('high_frequency_min_clicks') }}
            or coalesce(
                clicks_counted.event_type = 'game.stage_clear'
                and (
                    clicks_counted.clear_time_ms < {{ var('impossible_clear_ms') }}
                    or clicks_counted.score > stages.max_score
                ),
                0
            )
        ) as is_bot_signal
    from events_with_window_clicks as clicks_counted
    left join stages
        on clicks_counted.stage_key = stages.stage_key

)

select * from final
