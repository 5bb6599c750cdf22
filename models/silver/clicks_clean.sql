{{
    config(
        materialized=event_records_materialization(),
        incremental_strategy='delete+insert',
        unique_key='source_file',
        on_schema_change='fail',
    )
}}
{#- One row per bronze click record, nothing dropped: typed, deduplicated, validated.
    Rules: docs/contract.md and _silver__models.yml. Incremental builds work as in
    orders_clean (no catalog here). -#}
with

clicks as (
    select * from {{ ref('stg_events__clicks') }}
),

{% if is_incremental() %}
click_keys as (
    -- what decides which records to rebuild, cheap to read in full (no parsing)
    select
        source_file,
        loaded_at,
        ingestion_id
    from {{ ref('stg_events__clicks') }}
),

bronze_files as (
    select
        source_file,
        max(loaded_at) as loaded_at
    from click_keys
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
    -- files silver does not have yet, or whose rows were loaded again since it built them
    select bronze_files.source_file
    from bronze_files
    left join built_files on bronze_files.source_file = built_files.source_file
    where built_files.source_file is null or bronze_files.loaded_at > built_files.loaded_at
),

reloaded_ingestion_ids as (
    -- the ids in those files now, and before the reload (a changed file may have lost some)
    select click_keys.ingestion_id
    from click_keys
    inner join reloaded_files on click_keys.source_file = reloaded_files.source_file
    union distinct
    select previous_build.ingestion_id
    from {{ this }} as previous_build
    inner join reloaded_files on previous_build.source_file = reloaded_files.source_file
),

files_to_rebuild as (
    select source_file from reloaded_files
    union distinct
    select click_keys.source_file
    from click_keys
    inner join reloaded_ingestion_ids on click_keys.ingestion_id = reloaded_ingestion_ids.ingestion_id
),

files_to_read as (
    -- those files, and the files holding other copies of their ingestion ids (to rank them)
    select source_file from files_to_rebuild
    union distinct
    select copies.source_file
    from click_keys as copies
    inner join click_keys as rebuilt on copies.ingestion_id = rebuilt.ingestion_id
    inner join files_to_rebuild on rebuilt.source_file = files_to_rebuild.source_file
),

clicks_in_scope as (
    -- joins on the landing file only, so that only these files are parsed
    select
        clicks.*,
        files_to_rebuild.source_file is not null as is_rebuilt
    from clicks
    inner join files_to_read on clicks.source_file = files_to_read.source_file
    left join files_to_rebuild on clicks.source_file = files_to_rebuild.source_file
),
{% else %}
clicks_in_scope as (
    select
        *,
        true as is_rebuilt
    from clicks
),
{% endif %}

clicks_ranked as (
    select
        *,
        case
            when ingestion_id is null then 1
            else row_number() over (
                partition by ingestion_id
                order by
                    ingested_at nulls last,
                    {{ bytewise('event_ts_raw') }} nulls last,
                    {{ bytewise('event_id') }} nulls last,
                    {{ bytewise('session_id') }} nulls last,
                    user_id nulls last,
                    item_id nulls last,
                    {{ bytewise('event_type') }} nulls last,
                    {{ bytewise('search_query') }} nulls last,
                    {{ bytewise('source_file') }},
                    source_line
            )
        end as delivery_rank
    from clicks_in_scope
),

clicks_to_build as (
    select * from clicks_ranked
    where is_rebuilt
),

clicks_validated as (
    select
        ingestion_id,
        event_id,
        session_id,
        user_id,
        item_id,
        event_type,
        search_query,
        event_ts,
        cast(event_ts as date) as event_date,
        ingested_at,
        delivery_rank > 1 as is_duplicate,
        {{ join_codes([
            ('missing_event_id', 'event_id is null'),
            ('missing_user_id', 'user_id is null'),
            ('missing_session_id', 'session_id is null'),
            ('invalid_event_type', "event_type is null or event_type not in ('search', 'view', 'click', 'add_to_cart')"),
            ('invalid_event_ts', 'event_ts is null'),
            ('missing_item_id', "item_id is null and (event_type is null or event_type <> 'search')"),
        ]) }} as validation_errors,
        source_file,
        source_line,
        loaded_at
    from clicks_to_build
),

clicks_flagged as (
    select
        ingestion_id,
        event_id,
        session_id,
        user_id,
        item_id,
        event_type,
        search_query,
        event_ts,
        event_date,
        ingested_at,
        is_duplicate,
        validation_errors,
        validation_errors is null as is_valid,
        source_file,
        source_line,
        loaded_at
    from clicks_validated
)

select * from clicks_flagged
