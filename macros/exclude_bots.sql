{#- Bots stay in the data and are left out of KPI marts by their flag (var `kpi_exclude_bots`,
    default true). These render a condition for a `where`: true when the row is not a bot's. -#}

{#- A clickstream session id that sessionization never flagged as a bot (fct_sessions.is_bot). -#}
{% macro not_a_bot_session(session_id_column) -%}
    {%- if var('kpi_exclude_bots') -%}
        {{ session_id_column }} not in (
            select bot_sessions.session_entity_key
            from {{ ref('fct_sessions') }} as bot_sessions
            where bot_sessions.domain = 'clickstream' and bot_sessions.is_bot
        )
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}

{#- A game/economy player id that is not a bot's (dim_users.is_bot, from behaviour). -#}
{% macro not_a_bot_user(user_id_column) -%}
    {%- if var('kpi_exclude_bots') -%}
        {{ user_id_column }} not in (
            select bot_users.user_id
            from {{ ref('dim_users') }} as bot_users
            where bot_users.is_bot
        )
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}
