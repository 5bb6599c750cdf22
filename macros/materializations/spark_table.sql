{#- spark_table: a silver or gold model whose rows Spark wrote (var medallion_engine = spark).

    The model's SQL does not run: its relation becomes a view over Spark's table (the source
    `spark_<layer>.<name>`), so that every ref() to it, the tests on it and the exposures read
    what Spark computed. An enforced contract is checked against Spark's columns and types. The
    model's hooks do not run either (they maintain the dbt-built table). -#}
{% materialization spark_table, default %}
    {%- set spark_relation = roundtrip.spark_table_relation(model) -%}
    {%- set target_relation = this.incorporate(type='view') -%}
    {%- set existing_relation = load_cached_relation(this) -%}

    {% do roundtrip.prepare_spark_table(spark_relation, model) %}
    {%- set read_sql = roundtrip.spark_table_sql(spark_relation, model) -%}

    {% if existing_relation is not none %}
        {{ adapter.drop_relation(existing_relation) }}
    {% endif %}
    {% call statement('main') -%}
        {{ get_create_view_as_sql(target_relation, read_sql) }}
    {%- endcall %}

    {{ adapter.commit() }}
    {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}
