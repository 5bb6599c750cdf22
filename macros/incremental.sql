{#- Incremental builds of the event layers. -#}

{#- How event-record models (silver) are materialized: incremental where dbt can replace one
    landed file's rows in place (delete+insert), a full table on BigQuery, whose engine rebuilds
    them at any size and whose adapter has no delete+insert. -#}
{% macro event_records_materialization() -%}
    {{ return(adapter.dispatch('event_records_materialization', 'roundtrip')()) }}
{%- endmacro %}

{% macro default__event_records_materialization() -%}
    {{ return('incremental') }}
{%- endmacro %}

{% macro bigquery__event_records_materialization() -%}
    {{ return('table') }}
{%- endmacro %}

{#- dbt's is_incremental() looks the relation up before it reads the model's materialization;
    answering from the configuration first keeps `dbt compile` free of warehouse round trips
    for models that are not incremental on this target (compile for BigQuery works offline). -#}
{% macro is_incremental() %}
    {% if model.config.materialized != 'incremental' %}
        {{ return(false) }}
    {% endif %}
    {{ return(dbt.is_incremental()) }}
{% endmacro %}
