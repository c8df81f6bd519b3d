{{
    config(
        materialized='materialized_view',
        settings=insert_time_table_settings(),
        engine='SummingMergeTree()',
        on_schema_change='append_new_columns',
        partition_by='toYYYYMM(event_date)',
        order_by='(event_date, user_id)'
    )
}}

-- Insert-time aggregate (dbt-clickhouse `materialized_view`): the view `agg_game_daily_user_summary_mv`
-- adds every block the loader inserts into the raw game table to this SummingMergeTree, one row
-- per (day, player) and block until background merges add the rows up. Read it through
-- `game_daily_user_summary_live`, which sums again because merges are not guaranteed.
-- It counts deliveries: a batch the loader retries is dropped by this table's deduplication
-- window (macros/insert_time_tables.sql), but an event a producer sent twice is counted twice here (the
-- dbt marts count distinct events). Quarantined events (macros/quarantine.sql) are left out, as
-- in the dbt marts, except for the rules an insert cannot apply: a stage outside the catalog (it
-- would read another relation) and an event id used in another domain. Such events are counted
-- here and not in fct_events (assert_realtime_aggregates_match_fct_events warns).

select
    toDate(ts) as event_date,
    assumeNotNull(user_id) as user_id,
    toUInt64(count()) as event_count,
    toUInt64(countIf(event_type = 'game.session_start')) as session_count,
    toUInt64(countIf(event_type = 'game.stage_start')) as stage_start_count,
    toUInt64(countIf(event_type = 'game.stage_clear')) as stage_clear_count,
    toUInt64(countIf(event_type = 'game.stage_fail')) as stage_fail_count,
    toUInt64(countIf(event_type = 'game.item_use')) as item_use_count,
    toUInt64(sumIf(JSONExtractUInt(payload, 'duration_ms'), event_type = 'game.session_end')) as play_time_ms
from {{ source('raw', 'raw_game_events') }}
where empty({{ game_quarantine_reasons(stage_catalog=false) }})
group by event_date, user_id
