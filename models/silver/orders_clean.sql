{#- One row per bronze order record, nothing dropped: typed, deduplicated, validated, enriched.
    Rules: see _silver__models.yml. -#}
with

orders as (
    select * from {{ ref('stg_events__orders') }}
),

items as (
    select * from {{ ref('stg_catalog__items') }}
),

orders_ranked as (
    select
        orders.*,
        case
            when orders.ingestion_id is null then 1
            else row_number() over (
                partition by orders.ingestion_id
                -- earliest delivery is the original; exact ties fall back to the record's fields
                order by
                    orders.ingested_at nulls last, orders.event_ts_raw nulls last, orders.order_id nulls last,
                    orders.user_id nulls last, orders.item_id nulls last, orders.quantity nulls last,
                    orders.unit_price nulls last, orders.session_id nulls last, orders.currency nulls last
            )
        end as delivery_rank
    from orders
),

orders_enriched as (
    select
        orders_ranked.*,
        items.item_id is not null as is_known_item,
        items.item_title,
        items.category
    from orders_ranked
    left join items on orders_ranked.item_id = items.item_id
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
        ]) }} as validation_errors
    from orders_enriched
),

orders_flagged as (
    select
        *,
        validation_errors is null as is_valid
    from orders_validated
)

select * from orders_flagged
