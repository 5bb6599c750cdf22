{#- Rename and cast only. Casts are safe (NULL when the text does not fit) so that silver can
    tell "missing" from "invalid"; the raw text of event_ts is kept for the duplicate tie-break.
    The bronze record's lineage (file, line, load time) drives incremental builds. -#}
with

source as (
    select * from {{ source('events', 'orders') }}
),

renamed as (
    select
        ingestion_id,
        order_id,
        {{ safe_cast('user_id', 'bigint') }} as user_id,
        {{ safe_cast('item_id', 'bigint') }} as item_id,
        session_id,
        {{ safe_cast('quantity', 'integer') }} as quantity,
        {{ safe_cast('unit_price', 'decimal(12, 2)') }} as unit_price,
        currency,
        event_ts as event_ts_raw,
        {{ parse_iso_timestamp('event_ts') }} as event_ts,
        {{ parse_iso_timestamp('ingested_at') }} as ingested_at,
        _source_file as source_file,
        cast(_source_line as bigint) as source_line,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at
    from source
)

select * from renamed
