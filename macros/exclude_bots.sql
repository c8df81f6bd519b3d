{#- Bots stay in the data and are left out of KPI marts by their anomalies: a clickstream
    session or a player is a bot when an anomaly of a type in var `bot_anomaly_types` (default:
    all five, HIGH_FREQUENCY, BOT_LIKE, IMPOSSIBLE_CLEAR, SCORE_OVERFLOW, RAPID_FIRE) flagged
    it. var `kpi_exclude_bots` false puts bots back into the KPIs. -#}

{#- `anomaly_type in (...)` of the types in var `bot_anomaly_types` (false when it is empty). -#}
{% macro bot_anomaly_type_condition() -%}
    {%- set types = var('bot_anomaly_types') -%}
    {%- if types | length == 0 -%}
        false
    {%- else -%}
        anomaly_type in ({% for type in types %}'{{ type }}'{{ ", " if not loop.last }}{% endfor %})
    {%- endif -%}
{%- endmacro %}

{#- The clickstream session ids (source session_id) a bot anomaly flagged. -#}
{% macro bot_session_ids() -%}
    select bot_sessions.session_id
    from {{ ref('clickstream_anomalies') }} as bot_sessions
    where {{ bot_anomaly_type_condition() }}
{%- endmacro %}

{#- The player ids a bot anomaly flagged (dim_users.is_bot). -#}
{% macro bot_user_ids() -%}
    select bot_users.user_id
    from {{ ref('game_anomalies') }} as bot_users
    where {{ bot_anomaly_type_condition() }}
{%- endmacro %}

{#- These render a condition for a `where`: true when the row is not a bot's (or when
    kpi_exclude_bots is false). -#}
{% macro not_a_bot_session(session_id_column) -%}
    {%- if var('kpi_exclude_bots') -%}
        {{ session_id_column }} not in ({{ bot_session_ids() }})
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}

{#- (players: through dim_users.is_bot, which bot_user_ids() sets) -#}
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
