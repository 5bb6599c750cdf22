{#- Incremental builds of the event layers. -#}

{#- How event-record models (silver) are materialized: incremental where dbt can replace one
    landed file's rows in place (delete+insert), a full table on BigQuery, whose engine rebuilds
    them at any size and whose adapter has no delete+insert; with var medallion_engine = spark,
    Spark's table (macros/materializations/spark_table.sql). -#}
{% macro event_records_materialization() -%}
    {%- if roundtrip.medallion_engine() == 'spark' -%}
        {{ return('spark_table') }}
    {%- endif -%}
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

{#- The records an event-records model (orders_clean, clicks_clean) builds, as CTEs ending in
    `<records>_in_scope`: the rows of `records` (a CTE over `source_model`) with `is_rebuilt`.

    A full build takes every record. An incremental build replaces whole landed files
    (delete+insert on source_file) and rebuilds every file whose rows can change: files silver
    does not have or whose rows were loaded again since it built them; files holding another
    copy of one of their ingestion ids, now or before the reload (a late or an earlier copy
    moves the original); the ids of files that left bronze (moved or dropped by the loader:
    their copies elsewhere may become originals); and, when given, `extra_rebuild`, a query of
    more source_files (over `extra_ctes`, with `<records>_keys` and `built_files` in scope). It
    also reads, without rebuilding, the files holding other copies of those ids (to rank them).
    `key_columns`: columns of `<records>_keys` beyond source_file, loaded_at and ingestion_id. -#}
{% macro event_records_in_scope(records, source_model, key_columns=[], extra_ctes='', extra_rebuild='') %}
{%- set keys = records ~ '_keys' %}
{% if is_incremental() %}
{{ keys }} as (
    -- what decides which records to rebuild, cheap to read in full (no parsing)
    select
        source_file,
        loaded_at,
        ingestion_id{% for column in key_columns %},
        {{ column }}{% endfor %}
    from {{ source_model }}
),

bronze_files as (
    select
        source_file,
        max(loaded_at) as loaded_at
    from {{ keys }}
    group by source_file
),

built_files as (
    select
        source_file,
        max(loaded_at) as loaded_at
    from {{ this }}
    group by source_file
),

reloaded_files as (
    select bronze_files.source_file
    from bronze_files
    left join built_files on bronze_files.source_file = built_files.source_file
    where built_files.source_file is null or bronze_files.loaded_at > built_files.loaded_at
),

changed_files as (
    -- reloaded, or gone from bronze (their rows leave silver in the post-hook)
    select source_file from reloaded_files
    union distinct
    select built_files.source_file
    from built_files
    left join bronze_files on built_files.source_file = bronze_files.source_file
    where bronze_files.source_file is null
),

reloaded_ingestion_ids as (
    -- a changed file may have lost some of its ids: the rows that had them move too
    select {{ keys }}.ingestion_id
    from {{ keys }}
    inner join reloaded_files on {{ keys }}.source_file = reloaded_files.source_file
    union distinct
    select previous_build.ingestion_id
    from {{ this }} as previous_build
    inner join changed_files on previous_build.source_file = changed_files.source_file
),
{{ extra_ctes }}
files_to_rebuild as (
    select source_file from reloaded_files
    union distinct
    select {{ keys }}.source_file
    from {{ keys }}
    inner join reloaded_ingestion_ids on {{ keys }}.ingestion_id = reloaded_ingestion_ids.ingestion_id
    {%- if extra_rebuild %}
    union distinct
    {{ extra_rebuild }}
    {%- endif %}
),

files_to_read as (
    select source_file from files_to_rebuild
    union distinct
    select copies.source_file
    from {{ keys }} as copies
    inner join {{ keys }} as rebuilt on copies.ingestion_id = rebuilt.ingestion_id
    inner join files_to_rebuild on rebuilt.source_file = files_to_rebuild.source_file
),

{{ records }}_in_scope as (
    -- joins on the landing file only, so that only these files are parsed
    select
        {{ records }}.*,
        files_to_rebuild.source_file is not null as is_rebuilt
    from {{ records }}
    inner join files_to_read on {{ records }}.source_file = files_to_read.source_file
    left join files_to_rebuild on {{ records }}.source_file = files_to_rebuild.source_file
)
{% else %}
{{ records }}_in_scope as (
    select
        *,
        true as is_rebuilt
    from {{ records }}
)
{% endif %}
{%- endmacro %}

{#- Post-hook of an incremental event-records build: rows of landed files that left bronze (the
    loader moved their rows to the file's new path, or dropped them with the file) leave silver. -#}
{% macro delete_files_gone_from_bronze(source_model) %}
    {% if is_incremental() %}
        delete from {{ this }}
        where not exists (
            select 1 from {{ source_model }} as bronze
            where bronze.source_file = {{ this }}.source_file
        )
    {% endif %}
{% endmacro %}

{% macro delivery_rank(tie_breakers) -%}
{#- Which delivery of an ingestion id a record is (1: the original, kept; >1: a duplicate).
    The earliest delivery is the original; exact ties fall back to the record's fields, in
    ``tie_breakers`` order (text compared byte-wise by the caller), then to its place in the
    landing files. -#}
case
            when ingestion_id is null then 1
            else row_number() over (
                partition by ingestion_id
                order by
                    ingested_at nulls last,
                    {%- for expression in tie_breakers %}
                    {{ expression }} nulls last,
                    {%- endfor %}
                    {{ bytewise('source_file') }},
                    source_line
            )
        end
{%- endmacro %}
