{#- Rename and cast only (see stg_events__orders). -#}
with

source as (
    select * from {{ source('events', 'clicks') }}
),

renamed as (
    select
        cast(ingestion_id as {{ dbt.type_string() }}) as ingestion_id,
        cast(event_id as {{ dbt.type_string() }}) as event_id,
        cast(session_id as {{ dbt.type_string() }}) as session_id,
        {{ parse_integer('user_id') }} as user_id,
        {{ parse_integer('item_id') }} as item_id,
        cast(event_type as {{ dbt.type_string() }}) as event_type,
        cast(query as {{ dbt.type_string() }}) as search_query,
        cast(event_ts as {{ dbt.type_string() }}) as event_ts_raw,
        {{ parse_iso_timestamp('event_ts') }} as event_ts,
        {{ parse_iso_timestamp('ingested_at') }} as ingested_at,
        cast(_missing_fields as {{ dbt.type_string() }}) as missing_fields,
        cast(_source_file as {{ dbt.type_string() }}) as source_file,
        cast(_source_line as bigint) as source_line,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at
    from source
)

select * from renamed
