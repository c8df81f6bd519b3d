{{
    config(
        materialized='table',
        order_by='event_id'
    )
}}

-- depends_on: {{ ref('base_raw__quarantine_checked_through') }}

-- Commerce order events held back from staging, one row per event, with the reasons. A table,
-- rebuilt every run after base_raw__quarantine_checked_through: stg_orders__order_events takes
-- its verdicts for the events loaded up to then (macro not_quarantined); the warn test and
-- fct_events' pre-hook read it. Besides the row-wise rules (base_orders__order_events), two
-- rules compare an order's events whose own content passed, in order of version, then event_id
-- (so every run and a full refresh decide alike):
-- - order_version_reused: another such event of the order has the same version and a smaller
--   event_id (that one is kept: which of the two is right cannot be told);
-- - ts_before_an_earlier_version: its ts is before the ts of such an event with a lower version
--   (versions are the changes' times: the latest state must not predate an earlier one).
-- They run here, once per run, as they read every event of an order.
with order_events as (

    select
        *,
        tupleElement({{ orders_quarantine_fields() }}, 'order_id') as checked_order_id,
        tupleElement({{ orders_quarantine_fields() }}, 'version') as checked_order_version
    from {{ ref('base_orders__order_events') }}

),

-- over the order's events before this one (by version, then event_id) whose content passed:
-- the highest version and the latest ts
order_checks as (

    select
        *,
        max(if(empty(quarantine_reasons), checked_order_version, null)) over earlier_events as previous_version,
        max(if(empty(quarantine_reasons), ts, null)) over earlier_events as previous_latest_ts,
        empty(quarantine_reasons) and coalesce(checked_order_version = previous_version, false)
            as is_version_reused
    from order_events
    window earlier_events as (
        partition by checked_order_id
        order by checked_order_version asc, event_id asc
        rows between unbounded preceding and 1 preceding
    )

),

checked_events as (

    select
        *,
        arrayConcat(
            quarantine_reasons,
            if(is_version_reused, ['order_version_reused'], []),
            -- (the events before one that is not reused all have lower versions)
            if(
                empty(quarantine_reasons) and not is_version_reused and ts < previous_latest_ts,
                ['ts_before_an_earlier_version'],
                []
            )
        ) as all_quarantine_reasons
    from order_checks

),

final as (

    {{ quarantined_events('checked_events', reasons='all_quarantine_reasons') }}

)

select * from final
