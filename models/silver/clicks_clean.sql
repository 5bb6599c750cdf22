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

{{ reloaded_files_ctes('click_keys') }},

files_to_rebuild as (
    select source_file from reloaded_files
    union distinct
    select click_keys.source_file
    from click_keys
    inner join reloaded_ingestion_ids on click_keys.ingestion_id = reloaded_ingestion_ids.ingestion_id
),

{{ files_to_read_cte('click_keys') }},

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
