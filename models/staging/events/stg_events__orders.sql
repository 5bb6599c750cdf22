{#- Rename and cast only. Text is cast to the adapter's string type (the loaders may write
    varchar or text); numbers parse only from plain decimal notation and are NULL otherwise
    (parse_integer / parse_decimal), so that silver flags them; the raw text of event_ts is kept
    for the duplicate tie-break. `missing_fields` lists the contract fields the record lacked
    entirely (the loader's `_missing_fields`; NULL when it had them all, even as null). The
    bronze record's lineage (file, line, load time) drives incremental builds. -#}
with

source as (
    select * from {{ source('events', 'orders') }}
),

renamed as (
    select
        cast(ingestion_id as {{ dbt.type_string() }}) as ingestion_id,
        cast(order_id as {{ dbt.type_string() }}) as order_id,
        {{ parse_integer('user_id') }} as user_id,
        {{ parse_integer('item_id') }} as item_id,
        cast(session_id as {{ dbt.type_string() }}) as session_id,
        {{ parse_integer('quantity', 'integer') }} as quantity,
        {{ parse_decimal('unit_price', 'decimal(12, 2)') }} as unit_price,
        cast(currency as {{ dbt.type_string() }}) as currency,
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
