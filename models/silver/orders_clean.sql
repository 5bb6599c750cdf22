{{
    config(
        materialized=event_records_materialization(),
        incremental_strategy='delete+insert',
        unique_key='source_file',
        on_schema_change='fail',
        post_hook="{{ delete_files_gone_from_bronze(ref('stg_events__orders')) }}",
    )
}}
{#- One row per bronze order record, nothing dropped: typed, deduplicated, validated, enriched.
    Rules: docs/contract.md and _silver__models.yml.

    Incremental builds replace whole landed files and rebuild every file whose rows can change
    (event_records_in_scope): reloaded files, other copies of their ingestion ids, files that
    left bronze, and here also files with orders of catalog items loaded since the newest load
    silver has seen. The result is the same as a full refresh (tests/test_models_incremental.py). -#}
{%- set catalog_changes %}
last_build as (
    select max(loaded_at) as loaded_at
    from built_files
),

changed_items as (
    -- catalog rows written since the newest load silver has seen
    select items.item_id
    from items
    inner join last_build on items.loaded_at > last_build.loaded_at or last_build.loaded_at is null
),
{% endset %}
{%- set orders_of_changed_items %}
    select orders_keys.source_file
    from orders_keys
    inner join changed_items on orders_keys.item_id = changed_items.item_id
{%- endset %}
with

orders as (
    select * from {{ ref('stg_events__orders') }}
),

items as (
    select * from {{ ref('stg_catalog__items') }}
),

{{ event_records_in_scope(
    'orders', ref('stg_events__orders'), ['item_id'], catalog_changes, orders_of_changed_items
) }},

orders_ranked as (
    select
        *,
        {{ delivery_rank([
            bytewise('event_ts_raw'),
            bytewise('order_id'),
            'user_id',
            'item_id',
            'quantity',
            'unit_price',
            bytewise('session_id'),
            bytewise('currency'),
        ]) }} as delivery_rank
    from orders_in_scope
),

orders_to_build as (
    select * from orders_ranked
    where is_rebuilt
),

orders_enriched as (
    select
        orders_to_build.*,
        items.item_id is not null as is_known_item,
        items.item_title,
        items.category
    from orders_to_build
    left join items on orders_to_build.item_id = items.item_id
),

orders_validated as (
    select
        ingestion_id,
        order_id,
        user_id,
        item_id,
        session_id,
        quantity,
        unit_price,
        currency,
        event_ts,
        cast(event_ts as date) as event_date,
        ingested_at,
        quantity * unit_price as amount,
        item_title,
        category,
        delivery_rank > 1 as is_duplicate,
        {{ join_codes([
            ('missing_order_id', 'order_id is null'),
            ('missing_user_id', 'user_id is null'),
            ('missing_item_id', 'item_id is null'),
            ('invalid_event_ts', 'event_ts is null'),
            ('invalid_quantity', 'quantity is null or quantity <= 0'),
            ('invalid_price', 'unit_price is null or unit_price <= 0 or unit_price >= 10000'),
            ('unknown_item', 'item_id is not null and not is_known_item'),
            ('missing_fields', 'missing_fields is not null'),
        ]) }} as validation_errors,
        source_file,
        source_line,
        loaded_at
    from orders_enriched
),

orders_flagged as (
    select
        ingestion_id,
        order_id,
        user_id,
        item_id,
        session_id,
        quantity,
        unit_price,
        currency,
        event_ts,
        event_date,
        ingested_at,
        amount,
        item_title,
        category,
        is_duplicate,
        validation_errors,
        validation_errors is null as is_valid,
        source_file,
        source_line,
        loaded_at
    from orders_validated
)

select * from orders_flagged
