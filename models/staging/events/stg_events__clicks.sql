{#- Rename and cast only (see stg_events__orders). -#}
with

source as (
    select * from {{ source('events', 'clicks') }}
),

renamed as (
    select
        ingestion_id,
        event_id,
        session_id,
        {{ safe_cast('user_id', 'bigint') }} as user_id,
        {{ safe_cast('item_id', 'bigint') }} as item_id,
        event_type,
        query as search_query,
        event_ts as event_ts_raw,
        {{ parse_iso_timestamp('event_ts') }} as event_ts,
        {{ parse_iso_timestamp('ingested_at') }} as ingested_at,
        _source_file as source_file,
        cast(_source_line as bigint) as source_line,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at
    from source
)

select * from renamed
