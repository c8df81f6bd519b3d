{#- The column holds only event types the registry (ingestion/contract.py) gives to `domain`, read
    from the seed event_types that `make event-types` writes from it: the list is written once. -#}
{% test registered_event_type(model, column_name, domain) %}

    select {{ column_name }}
    from {{ model }}
    where {{ column_name }} not in (
        select event_types.event_type from {{ ref('event_types') }} as event_types
        where event_types.domain = '{{ domain }}'
    )

{% endtest %}
