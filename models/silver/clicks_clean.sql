{{
    config(
        materialized=event_records_materialization(),
        incremental_strategy='delete+insert',
        unique_key='source_file',
        on_schema_change='fail',
        post_hook="{{ delete_files_gone_from_bronze(ref('stg_events__clicks')) }}",
    )
}}
{#- One row per bronze click record, nothing dropped: typed, deduplicated, validated.
    Rules: docs/contract.md and _silver__models.yml. Incremental builds work as in
    orders_clean (event_records_in_scope; no catalog here). -#}
with

clicks as (
    select * from {{ ref('stg_events__clicks') }}
),

{{ event_records_in_scope('clicks', ref('stg_events__clicks')) }},

clicks_ranked as (
    select
        *,
        {{ delivery_rank([
            bytewise('event_ts_raw'),
            bytewise('event_id'),
            bytewise('session_id'),
            'user_id',
            'item_id',
            bytewise('event_type'),
            bytewise('search_query'),
        ]) }} as delivery_rank
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
            ('missing_fields', 'missing_fields is not null'),
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
