with source as (

    select * from {{ ref('game_stages') }}

),

renamed as (

    select
        toUInt8(chapter) as chapter_number,
        toUInt8(stage) as stage_number,
        toUInt16(chapter * 100 + stage) as stage_key,
        toUInt8(grid_size) as grid_size,
        toUInt16(par_moves) as par_moves,
        toUInt32(max_score) as max_score
    from source

)

select * from renamed
