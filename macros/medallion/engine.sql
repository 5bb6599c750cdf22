{#- The medallion's engine, one switch: var `medallion_engine` (ROUNDTRIP_MEDALLION_ENGINE).

    `dbt`: these models build staging of the event files, silver and gold from bronze.
    `spark`: spark_jobs/ has written silver and gold as Parquet under var `spark_output`; the
    silver and gold models are then materialized `spark_table` (a view over Spark's table, read as
    the source `spark_silver` / `spark_gold`, their SQL never runs), the staging models of the
    event files are ephemeral (never built), and everything downstream (intermediate, marts,
    serving, their tests, the exposures) builds unchanged from the same files. docs/spark.md,
    "One switch". dbt_project.yml cannot call macros: its copies of the switch are inline. -#}
{% macro medallion_engine() -%}
    {%- set engine = var('medallion_engine', env_var('ROUNDTRIP_MEDALLION_ENGINE', 'dbt')) | string | trim -%}
    {%- if engine not in ('dbt', 'spark') -%}
        {{ exceptions.raise_compiler_error(
            "var medallion_engine = '" ~ engine ~ "' (ROUNDTRIP_MEDALLION_ENGINE): use dbt or spark") }}
    {%- endif -%}
    {{ return(engine) }}
{%- endmacro %}


{#- Where Spark wrote the table behind a silver or gold model: `<spark_output>/<layer>/<name>`. -#}
{% macro spark_table_location(layer, name) -%}
    {%- set output = var('spark_output', env_var('ROUNDTRIP_SPARK_OUTPUT', env_var('ROUNDTRIP_DATA_DIR', 'data') ~ '/spark')) -%}
    {{ return(output | string | trim | replace('\\', '/') ~ '/' ~ layer ~ '/' ~ name) }}
{%- endmacro %}


{#- Spark's table behind `node` (a silver or gold model): the source `spark_<layer>.<name>`. -#}
{% macro spark_table_relation(node) -%}
    {{ return(source('spark_' ~ node.fqn[1], node.name)) }}
{%- endmacro %}


{#- The pre-hook of the silver and gold models (dbt_project.yml): with medallion_engine spark, a
    call to source() that dbt sees when it parses the model, so that the model depends on Spark's
    table (lineage in dbt docs, `--select source:spark_silver+`). It renders to nothing with the
    dbt engine, and a spark_table model runs no hooks. -#}
{% macro spark_table_dependency() -%}
    {%- if roundtrip.medallion_engine() == 'spark' -%}
        -- reads {{ roundtrip.spark_table_relation(model) }}
    {%- endif -%}
{%- endmacro %}


{#- Make Spark's table readable from the warehouse, or stop the build saying why it is not.
    DuckDB reads the Parquet files where they are (the source renders as read_parquet); BigQuery
    gets an external table over them; Postgres reads the copy `python -m spark_jobs publish`
    loaded. -#}
{% macro prepare_spark_table(relation, node) -%}
    {{ return(adapter.dispatch('prepare_spark_table', 'roundtrip')(relation, node)) }}
{%- endmacro %}

{% macro default__prepare_spark_table(relation, node) -%}
    {%- set found = adapter.get_relation(relation.database, relation.schema, relation.identifier) -%}
    {%- if found is none -%}
        {{ exceptions.raise_compiler_error(
            "medallion_engine spark: no table " ~ relation ~ " in the warehouse for model " ~ node.name
            ~ ". Load Spark's tables first: python -m spark_jobs publish --target " ~ target.name) }}
    {%- endif -%}
{%- endmacro %}

{% macro duckdb__prepare_spark_table(relation, node) -%}
    {%- set location = roundtrip.spark_table_location(node.fqn[1], node.name) -%}
    {%- set files = run_query("select count(*) from glob('" ~ location | replace("'", "''") ~ "/**/*.parquet')") -%}
    {%- if execute and files.columns[0].values()[0] == 0 -%}
        {{ exceptions.raise_compiler_error(
            "medallion_engine spark: Spark's table " ~ node.fqn[1] ~ "." ~ node.name ~ " has no Parquet file under "
            ~ location ~ ". Run the medallion on Spark first (make spark), or point spark_output / "
            ~ "ROUNDTRIP_SPARK_OUTPUT at its output.") }}
    {%- endif -%}
{%- endmacro %}

{% macro bigquery__prepare_spark_table(relation, node) -%}
    {%- set location = roundtrip.spark_table_location(node.fqn[1], node.name) -%}
    {%- if not location.startswith('gs://') -%}
        {{ exceptions.raise_compiler_error(
            "medallion_engine spark on BigQuery reads Spark's tables as external tables: spark_output / "
            ~ "ROUNDTRIP_SPARK_OUTPUT must be a gs:// URL, got '" ~ location ~ "'") }}
    {%- endif -%}
    {% do adapter.create_schema(relation) %}
    {% call statement('spark_external_table') -%}
        create or replace external table {{ relation }}
        {%- if 'event_date' in node.columns %} with partition columns (event_date date){% endif %}
        options (
            format = 'PARQUET',
            uris = ['{{ location }}/*.parquet'{% if 'event_date' in node.columns %}, '{{ location }}/*/*.parquet'{% endif %}]
            {%- if 'event_date' in node.columns %},
            hive_partition_uri_prefix = '{{ location }}'{% endif %}
        )
    {%- endcall %}
{%- endmacro %}


{#- The query of a `spark_table` view: Spark's columns, in the model's documented order first. -#}
{% macro spark_table_sql(relation, node) -%}
    {%- set found = get_columns_in_query('select * from ' ~ relation) -%}
    {%- set documented = node.columns.keys() | list -%}
    {%- set columns = [] -%}
    {%- for name in documented if name in found %}{% do columns.append(name) %}{% endfor -%}
    {%- for name in found if name not in columns %}{% do columns.append(name) %}{% endfor -%}
    select
    {%- for name in columns %}
        {{ adapter.quote(name) }}{{ ',' if not loop.last }}
    {%- endfor %}
    from {{ relation }}
{%- endmacro %}
