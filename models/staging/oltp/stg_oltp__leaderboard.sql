-- The game's leaderboard table as it stands in PostgreSQL now (CDC): each player's best
-- time-attack time per stage. A stage id is `<chapter>-<stage>` (oltp/leaderboard.py).

with current_rows as (

    {{ cdc_current_rows(source('oltp', 'cdc_leaderboard'), ['user_id', 'stage_id']) }}

),

renamed as (

    select
        user_id,
        stage_id,
        toUInt8OrNull(splitByChar('-', stage_id)[1]) as chapter_number,
        toUInt8OrNull(splitByChar('-', stage_id)[2]) as stage_number,
        JSONExtract(row_json, 'best_time_ms', 'Int64') as best_time_ms,
        parseDateTime64BestEffort(JSONExtractString(row_json, 'achieved_at'), 3, 'UTC') as achieved_at,
        cdc_lsn,
        cdc_committed_at
    from current_rows

)

select * from renamed
