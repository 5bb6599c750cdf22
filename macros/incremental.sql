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

{#- The file bookkeeping of an incremental event-records build (orders_clean, clicks_clean), as
    CTEs over `keys`: a CTE with source_file, loaded_at and ingestion_id of every bronze record.
    `reloaded_files`: files silver does not have yet, or whose rows were loaded again since it
    built them; `reloaded_ingestion_ids`: the ids in those files now and before the reload. -#}
{% macro reloaded_files_ctes(keys) %}
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

reloaded_ingestion_ids as (
    -- a changed file may have lost some of its ids: the rows that had them move too
    select {{ keys }}.ingestion_id
    from {{ keys }}
    inner join reloaded_files on {{ keys }}.source_file = reloaded_files.source_file
    union distinct
    select previous_build.ingestion_id
    from {{ this }} as previous_build
    inner join reloaded_files on previous_build.source_file = reloaded_files.source_file
)
{%- endmacro %}

{#- `files_to_read`: the files in `files_to_rebuild`, and the files holding other copies of
    their ingestion ids (needed to rank the copies). -#}
{% macro files_to_read_cte(keys) %}
files_to_read as (
    select source_file from files_to_rebuild
    union distinct
    select copies.source_file
    from {{ keys }} as copies
    inner join {{ keys }} as rebuilt on copies.ingestion_id = rebuilt.ingestion_id
    inner join files_to_rebuild on rebuilt.source_file = files_to_rebuild.source_file
)
{%- endmacro %}
