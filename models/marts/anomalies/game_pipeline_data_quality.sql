{{ config(order_by='event_date') }}

-- One row per event date of the game domain: the day's events, lateness and latency (read from
-- latency_daily, not recomputed) and the fill rate of every payload field the event contract
-- (ingestion/contract.py) declares for game events. A field's fill rate is the share of the
-- day's events of the types that carry it where the field is non-null (null when the day has
-- no such event). Required fields should stay at 1: the loader dead-letters events missing
-- them, so anything less means the contract and the staging model disagree
-- (required_fields_complete says whether they all do).

{#- payload field, its staging column, the event types that carry it, required or optional -#}
{%- set payload_fields = [
    ('chapter', 'chapter_number', ['stage_start', 'stage_clear', 'stage_fail'], 'required'),
    ('stage', 'stage_number', ['stage_start', 'stage_clear', 'stage_fail'], 'required'),
    ('mode', 'game_mode', ['stage_start', 'stage_clear', 'stage_fail'], 'required'),
    ('clear_time_ms', 'clear_time_ms', ['stage_clear'], 'required'),
    ('score', 'score', ['stage_clear'], 'required'),
    ('moves', 'moves', ['stage_clear'], 'optional'),
    ('wildcards_used', 'wildcards_used', ['stage_clear'], 'optional'),
    ('reason', 'fail_reason', ['stage_fail'], 'optional'),
    ('elapsed_ms', 'elapsed_ms', ['stage_fail'], 'optional'),
    ('item', 'item_name', ['item_use'], 'required'),
    ('action', 'item_action', ['item_use'], 'required'),
    ('cost_gold', 'item_cost_gold', ['item_use'], 'optional'),
    ('from_screen', 'from_screen', ['navigation'], 'required'),
    ('to_screen', 'to_screen', ['navigation'], 'required'),
    ('screen', 'screen', ['heartbeat'], 'optional'),
    ('platform', 'platform', ['session_start'], 'optional'),
    ('app_version', 'app_version', ['session_start'], 'optional'),
    ('duration_ms', 'duration_ms', ['session_end'], 'required'),
] %}

with game_events as (

    select * from {{ ref('stg_game__events') }}

),

latency as (

    select * from {{ ref('latency_daily') }}
    where domain = 'game'

),

fill_rates as (

    select
        {% for field_name, column_name, event_types, _ in payload_fields %}
            {% set carried = "event_type in ('game." ~ event_types | join("', 'game.") ~ "')" %}
            if(
                countIf({{ carried }}) = 0,
                null,
                countIf({{ carried }} and {{ column_name }} is not null) / countIf({{ carried }})
            ) as {{ field_name }}_fill_rate,
        {% endfor %}
        event_date
    from game_events
    group by event_date

),

final as (

    select
        latency.event_date,
        latency.event_count,
        latency.late_event_count,
        latency.late_event_share,
        latency.latency_p50_ms,
        latency.latency_p95_ms,
        latency.latency_p99_ms,
        latency.latency_max_ms,
        {% for field_name, _, _, _ in payload_fields %}
            fill_rates.{{ field_name }}_fill_rate,
        {% endfor %}
        toBool(
            true
            {% for field_name, _, _, requirement in payload_fields if requirement == 'required' %}
                and coalesce(fill_rates.{{ field_name }}_fill_rate = 1, true)
            {% endfor %}
        ) as required_fields_complete
    from latency
    left join fill_rates on latency.event_date = fill_rates.event_date

)

select * from final
