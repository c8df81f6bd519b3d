{{ config(**daily_partitioned_config('as_of_date', order_by='(as_of_date, trend_rank)', trailing_days=5)) }}

-- depends_on: {{ ref('fct_events') }}  (the days new events touched: macros/partition_days.sql)

-- Items trending as of each day: clicks in the last 3 days (as_of_date and the 2 before)
-- against the 3 days before those. trend_score = (recent - previous) / greatest(previous, 1),
-- so an item new this window scores its recent clicks. Items need at least
-- `trending_min_recent_clicks` recent clicks; the top `trending_items_top_n` per day are kept.
-- recent_purchases counts the item's buys in the recent window; category is that of its latest
-- recent click. Daily partitions (macros/partition_days.sql): a run recomputes the as_of days
-- whose 6-day window new events touched.

with clicks as (

    select * from {{ ref('clickstream_kpi_clicks') }}
    -- the as_of days computed and the 5 days before them (their windows)
    where {{ partition_day_filter('click_date', lookback_days=5) }}

),

purchases as (

    select * from {{ ref('clickstream_kpi_purchases') }}
    where {{ partition_day_filter('purchase_date', lookback_days=5) }}

),

item_days as (

    select
        click_date as event_date,
        item_id,
        count() as click_count,
        toUInt64(0) as purchase_count,
        argMax(category, (clicked_at, event_id)) as category,
        max(clicked_at) as last_clicked_at
    from clicks
    group by click_date, item_id

    union all

    select
        purchase_date as event_date,
        item_id,
        toUInt64(0) as click_count,
        count() as purchase_count,
        '' as category,
        toDateTime64(0, 3, 'UTC') as last_clicked_at
    from purchases
    group by purchase_date, item_id

),

last_day as (

    -- (over every day: the days computed may not include the last)
    select max(all_clicks.click_date) as max_click_date from {{ ref('clickstream_kpi_clicks') }} as all_clicks

),

item_day_offsets as (

    -- each day's clicks and buys count toward the as_of days 0-5 days later
    select
        event_date,
        item_id,
        click_count,
        purchase_count,
        category,
        last_clicked_at,
        arrayJoin(range(6)) as days_later
    from item_days

),

spread_over_windows as (

    -- in the recent window of as_of days 0-2 later, in the previous window of days 3-5 later
    select
        item_id,
        event_date + toIntervalDay(days_later) as as_of_date,
        days_later < 3 as is_recent,
        if(is_recent, click_count, 0) as recent_clicks,
        if(is_recent, purchase_count, 0) as recent_purchases,
        if(is_recent, 0, click_count) as previous_clicks,
        click_count,
        category,
        last_clicked_at
    from item_day_offsets

),

item_windows as (

    select
        as_of_date,
        item_id,
        argMaxIf(category, last_clicked_at, is_recent and click_count > 0) as category,
        sum(recent_clicks) as recent_clicks,
        sum(recent_purchases) as recent_purchases,
        sum(previous_clicks) as previous_clicks
    from spread_over_windows
    where as_of_date <= (select last_day.max_click_date from last_day)
    group by as_of_date, item_id

),

scored as (

    select
        as_of_date,
        item_id,
        category,
        recent_clicks,
        recent_purchases,
        previous_clicks,
        round((toInt64(recent_clicks) - toInt64(previous_clicks)) / greatest(previous_clicks, 1), 6) as trend_score
    from item_windows
    where recent_clicks >= {{ var('trending_min_recent_clicks') }}

),

ranked as (

    select
        *,
        row_number() over (
            partition by as_of_date order by trend_score desc, recent_clicks desc, item_id asc
        ) as trend_rank
    from scored

),

final as (

    select * from ranked
    where
        trend_rank <= {{ var('trending_items_top_n') }}
        and {{ partition_day_filter('as_of_date') }}

)

select * from final
