{#- Valid, original order lines up to as_of: what gold and the marts count. One row per order line. -#}
with

orders as (
    select * from {{ ref('orders_clean') }}
),

as_of as (
    select * from {{ ref('int_as_of') }}
),

valid_orders as (
    select
        orders.order_id,
        orders.user_id,
        orders.item_id,
        orders.session_id,
        orders.quantity,
        orders.amount,
        orders.category,
        orders.event_ts,
        orders.event_date,
        as_of.as_of,
        as_of.as_of_date,
        orders.source_file,
        orders.source_line
    from orders
    cross join as_of
    where orders.is_valid and not orders.is_duplicate and orders.event_ts <= as_of.as_of
)

select * from valid_orders
