-- Whales: players whose completed shop purchases over the last
-- whale_window_days (30) days of data bought at least whale_min_spend_gold (50000) gold,
-- biggest spenders first. Bots are already out of economy_whales when kpi_exclude_bots is true.
with whales as (

    select * from {{ ref('economy_whales') }}

),

final as (

    select
        user_id,
        shop_spend_gold,
        purchases,
        revenue,
        window_start_date,
        window_end_date,
        last_purchase_at
    from whales

)

select * from final
order by shop_spend_gold desc, user_id asc
