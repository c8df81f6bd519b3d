-- Every event that belongs to a session, with the entity it is sessionized by: the source
-- session_id for clickstream, the user for game and economy. Orders are not sessionized.
-- `is_bot_signal` marks the behaviour no human produces: a stage cleared faster than
-- `impossible_clear_ms` or above the stage's max score, or `high_frequency_min_clicks` clicks
-- in one epoch-aligned `high_frequency_window_seconds` window of a clickstream session.

with clicks as (

    select * from {{ ref('stg_clickstream__clicks') }}

),

purchases as (

    select * from {{ ref('stg_clickstream__purchases') }}

),

game_events as (

    select * from {{ ref('stg_game__events') }}

),

economy_events as (

    select * from {{ ref('stg_economy__events') }}

),

stages as (

    select * from {{ ref('stg_game_catalog__stages') }}

),

clicks_with_window_counts as (

    select
        event_id,
        session_id,
        clicked_at,
        loaded_at,
        count() over (
            partition by
                session_id,
                intDiv(toUnixTimestamp(clicked_at), {{ var('high_frequency_window_seconds') }})
        ) as clicks_in_window
    from clicks

),

clickstream_events as (

    select
        'clickstream' as domain,
        session_id as session_entity_key,
        event_id,
        'clickstream.click' as event_type,
        clicked_at as ts,
        loaded_at,
        1 as is_click,
        0 as is_purchase,
        toDecimal64(0, 2) as revenue,
        0 as is_stage_clear,
        0 as is_stage_fail,
        toUInt8(clicks_in_window >= {{ var('high_frequency_min_clicks') }}) as is_bot_signal
    from clicks_with_window_counts

    union all

    select
        'clickstream' as domain,
        session_id as session_entity_key,
        event_id,
        'clickstream.purchase' as event_type,
        purchased_at as ts,
        loaded_at,
        0 as is_click,
        1 as is_purchase,
        price * quantity as revenue,
        0 as is_stage_clear,
        0 as is_stage_fail,
        toUInt8(0) as is_bot_signal
    from purchases

),

player_events as (

    select
        'game' as domain,
        game_events.user_id as session_entity_key,
        game_events.event_id,
        game_events.event_type,
        game_events.ts,
        game_events.loaded_at,
        0 as is_click,
        0 as is_purchase,
        toDecimal64(0, 2) as revenue,
        toUInt8(game_events.event_type = 'game.stage_clear') as is_stage_clear,
        toUInt8(game_events.event_type = 'game.stage_fail') as is_stage_fail,
        -- (an unknown stage has a null max_score: no overflow can be judged)
        toUInt8(COALESCE(
            game_events.event_type = 'game.stage_clear'
            and (
                game_events.clear_time_ms < {{ var('impossible_clear_ms') }}
                or game_events.score > stages.max_score
            ),
            0
        )) as is_bot_signal
    from game_events
    left join stages
        on
            game_events.chapter_number = stages.chapter_number
            and game_events.stage_number = stages.stage_number

    union all

    select
        'economy' as domain,
        user_id as session_entity_key,
        event_id,
        event_type,
        ts,
        loaded_at,
        0 as is_click,
        toUInt8(COALESCE(event_type = 'shop.purchase' and purchase_status = 'completed', 0)) as is_purchase,
        toDecimal64(if(is_purchase = 1, COALESCE(price_cents, 0) / 100, 0), 2) as revenue,
        0 as is_stage_clear,
        0 as is_stage_fail,
        toUInt8(0) as is_bot_signal
    from economy_events

),

final as (

    select * from clickstream_events
    union all
    select * from player_events

)

select * from final
