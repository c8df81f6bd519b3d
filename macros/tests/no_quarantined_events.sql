{#- For a quarantine model (stg_<source>__quarantined_events): one row per quarantined event,
    naming it and its reasons, so the warning (and the Dagster check) says what was held back.
    Severity warn: quarantined events are a finding about the data, and the marts build without
    them (docs/analyst-guide.md, "Quarantine"). -#}
{% test no_quarantined_events(model) %}

    {{ config(
        severity='warn',
        meta={'description': 'Events held back from staging because they break a staging invariant: one row '
            ~ 'per event with its reasons (the asset holds them with the raw payload). Warns, never blocks: '
            ~ 'the marts build without them. docs/analyst-guide.md, "Quarantine".'}
    ) }}

    select
        event_id,
        event_type,
        ts,
        arrayStringConcat(quarantine_reasons, ', ') as quarantine_reasons
    from {{ model }}

{% endtest %}
