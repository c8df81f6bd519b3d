{{ config(**daily_partitioned_config('activity_date', order_by='(activity_date, user_id)')) }}

-- depends_on: {{ ref('fct_events') }}  (the days new events touched: macros/partition_days.sql)

-- One row per player and day (UTC date of ts) with any gold movement. The ledger is
-- reward.granted alone: the economy grants every gold change through it (stage clears, claims,
-- shop bundles, and negative deltas for item purchases). A claim's reward_gold and a shop
-- purchase's amount_gold are the same gold again, so adding them would count it twice (and a
-- double-tapped claim is granted once). Bots are left out when kpi_exclude_bots is true.

with economy_events as (

    select * from {{ ref('stg_economy__events') }}
    where
        event_type = 'reward.granted'
        and {{ partition_day_filter('event_date') }}

),

grants as (

    select
        user_id,
        event_date,
        coalesce(delta_gold, 0) as delta_gold,  -- required by the contract; never null in practice
        reward_reason
    from economy_events

),

users as (

    select * from {{ ref('dim_users') }}

),

user_days as (

    select
        event_date as activity_date,
        user_id,
        sumIf(delta_gold, delta_gold > 0) as gold_earned,
        -sumIf(delta_gold, delta_gold < 0) as gold_spent,
        sum(delta_gold) as net_gold,
        sumIf(delta_gold, delta_gold > 0 and reward_reason = 'stage_clear') as gold_from_stage_clears,
        sumIf(delta_gold, delta_gold > 0 and reward_reason in ('event.claim', 'mission.claim')) as gold_from_claims,
        sumIf(delta_gold, delta_gold > 0 and reward_reason = 'shop') as gold_bought,
        count() as grant_count
    from grants
    group by event_date, user_id

),

final as (

    select
        user_days.activity_date,
        user_days.user_id,
        coalesce(users.is_bot, false) as is_bot,
        user_days.gold_earned,
        user_days.gold_spent,
        user_days.net_gold,
        user_days.gold_from_stage_clears,
        user_days.gold_from_claims,
        user_days.gold_bought,
        user_days.grant_count
    from user_days
    left join users on user_days.user_id = users.user_id
    where {{ not_a_bot_user('user_days.user_id') }}

)

select * from final
