{{
    config(
        materialized='table',
        order_by='domain'
    )
}}

-- Per domain, the loaded_at up to which this run's quarantine tables hold the verdicts: the
-- newest loaded_at of the raw table when the run began, less quarantine_lookback_minutes (an
-- insert can become visible a little after the time it stamped on its rows). Built before the
-- quarantine tables, which see every row up to it; the staging views check later rows
-- themselves (macro not_quarantined). An empty raw table gives 1970, so every row is later.

with loaded as (

    select
        'clickstream' as domain,
        max(loaded_at) as newest_loaded_at
    from {{ source('raw', 'raw_clickstream_events') }}
    union all
    select
        'game' as domain,
        max(loaded_at) as newest_loaded_at
    from {{ source('raw', 'raw_game_events') }}
    union all
    select
        'economy' as domain,
        max(loaded_at) as newest_loaded_at
    from {{ source('raw', 'raw_economy_events') }}
    union all
    select
        'orders' as domain,
        max(loaded_at) as newest_loaded_at
    from {{ source('raw', 'raw_orders_events') }}

),

final as (

    select
        domain,
        newest_loaded_at - toIntervalMinute({{ var('quarantine_lookback_minutes') }}) as checked_through
    from loaded

)

select * from final
