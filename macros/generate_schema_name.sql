{#- Custom schemas are used as they are (staging, silver, gold, marts, serving), not prefixed
    with the target schema: the loaders, reverse_etl and the Spark jobs name them directly. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
