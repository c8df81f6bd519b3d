{{ config(order_by='user_id') }}

-- One row per whale: a player whose completed shop purchases over the whale_window_days days
-- up to the last day in the economy data (both ends included) bought at least
-- whale_min_spend_gold gold. Bots are flagged, and left out when kpi_exclude_bots is true.

with economy_events as (

    select * from {{ ref('stg_economy__events') }}

),

users as (

    select * from {{ ref('dim_users') }}

),

data_window as (

    select
        max(event_date) as window_end_date,
        addDays(window_end_date, 1 - {{ var('whale_window_days') }}) as window_start_date
    from economy_events

),

purchases as (

    select
        economy_events.user_id,
        coalesce(economy_events.amount_gold, 0) as amount_gold,  -- both required by the contract
        coalesce(economy_events.price_cents, 0) as price_cents,
        economy_events.ts,
        data_window.window_start_date,
        data_window.window_end_date
    from economy_events
    cross join data_window
    where
        economy_events.event_type = 'shop.purchase'
        and economy_events.purchase_status = 'completed'
        and economy_events.event_date between data_window.window_start_date and data_window.window_end_date

),

user_spend as (

    select
        user_id,
        window_start_date,
        window_end_date,
        sum(amount_gold) as shop_spend_gold,
        count() as purchases,
        toDecimal64(sum(price_cents), 2) / 100 as revenue,
        min(ts) as first_purchase_at,
        max(ts) as last_purchase_at
    from purchases
    group by user_id, window_start_date, window_end_date
    having shop_spend_gold >= {{ var('whale_min_spend_gold') }}

),

final as (

    select
        user_spend.user_id,
        coalesce(users.is_bot, false) as is_bot,
        user_spend.window_start_date,
        user_spend.window_end_date,
        user_spend.shop_spend_gold,
        user_spend.purchases,
        user_spend.revenue,
        user_spend.first_purchase_at,
        user_spend.last_purchase_at
    from user_spend
    left join users on user_spend.user_id = users.user_id
    where {{ not_a_bot_user('user_spend.user_id') }}

)

select * from final
