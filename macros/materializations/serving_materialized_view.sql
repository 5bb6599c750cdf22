{#- serving_materialized_view: what the serving database reads, kept fresh without blocking readers.

    Postgres: a real materialized view with a unique index on the model's `unique_key`. The first
    run (or a changed definition, or --full-refresh) builds it under a temporary name and swaps it
    in, in one transaction; every later run only does `refresh materialized view concurrently`,
    which readers never wait for. The view's comment keeps the hash of its compiled SQL and
    `serving_definition` (below), which reverse_etl compares with its manifest to refresh the
    view itself, without starting dbt, while the definition is unchanged (reverse_etl/refresh.py).
    DuckDB (no materialized views): the adapter's own table materialization.
    BigQuery: dbt-bigquery's materialized view (BigQuery refreshes it), or a table for a model
    configured with `meta: {bigquery_materialized_view: false}` (SQL BigQuery refuses in one). -#}

{% materialization serving_materialized_view, adapter='postgres' %}
    {%- set unique_key = config.require('unique_key') -%}
    {%- set key_columns = [unique_key] if unique_key is string else unique_key -%}
    {%- set target_relation = this.incorporate(type='materialized_view') -%}
    {%- set existing_relation = load_cached_relation(this) -%}
    {%- set marker = 'serving_materialized_view ' ~ local_md5(sql ~ '|' ~ key_columns | join(','))
        ~ ' definition ' ~ roundtrip.serving_definition(model, key_columns) -%}
    {%- set grant_config = config.get('grants') -%}

    {{ run_hooks(pre_hooks, inside_transaction=False) }}
    {{ run_hooks(pre_hooks, inside_transaction=True) }}

    {%- set refreshable = existing_relation is not none
        and existing_relation.type == 'materialized_view'
        and not should_full_refresh()
        and roundtrip.relation_comment(existing_relation) == marker -%}

    {% if refreshable %}
        {% call statement('main') -%}
            refresh materialized view concurrently {{ target_relation }}
        {%- endcall %}
    {% else %}
        {%- set intermediate_relation = make_intermediate_relation(target_relation) -%}
        {%- set index_name = target_relation.identifier ~ '_unique_key' -%}
        {{ drop_relation_if_exists(load_cached_relation(intermediate_relation)) }}
        {% call statement('main') -%}
            create materialized view {{ intermediate_relation }} as (
                {{ sql }}
            )
        {%- endcall %}
        {% call statement('index_and_mark') -%}
            create unique index {{ adapter.quote(intermediate_relation.identifier ~ '_unique_key') }}
                on {{ intermediate_relation }} ({{ key_columns | join(', ') }});
            comment on materialized view {{ intermediate_relation }} is '{{ marker }}'
        {%- endcall %}
        {% if existing_relation is not none %}
            {{ adapter.drop_relation(existing_relation) }}
        {% endif %}
        {% call statement('swap') -%}
            alter materialized view {{ intermediate_relation }} rename to {{ adapter.quote(target_relation.identifier) }};
            alter index {{ target_relation.schema }}.{{ adapter.quote(intermediate_relation.identifier ~ '_unique_key') }}
                rename to {{ adapter.quote(index_name) }}
        {%- endcall %}
        {% do apply_grants(target_relation, grant_config, should_revoke=false) %}
    {% endif %}

    {{ run_hooks(post_hooks, inside_transaction=True) }}
    {{ adapter.commit() }}
    {{ run_hooks(post_hooks, inside_transaction=False) }}
    {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}


{% materialization serving_materialized_view, adapter='bigquery' %}
    {% if config.get('meta', {}).get('bigquery_materialized_view', true) %}
        {{ return(materialization_materialized_view_bigquery()) }}
    {% endif %}
    {{ return(materialization_table_bigquery()) }}
{% endmaterialization %}


{% materialization serving_materialized_view, default %}
    {{ return(materialization_table_default()) }}
{% endmaterialization %}


{% materialization serving_materialized_view, adapter='duckdb' %}
    {{ return(materialization_table_duckdb()) }}
{% endmaterialization %}
