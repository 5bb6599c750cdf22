{#- One row per (event_date, item_id) with valid clicks carrying the item or valid order lines,
    up to as_of. Catalog fields straight from staging: items seen only through clicks have no
    silver row to take them from (a declared exception of the layer rules, dbt_project.yml). -#}
with

valid_orders as (
    select * from {{ ref('int_valid_orders') }}
),

valid_clicks as (
    select * from {{ ref('int_valid_clicks') }}
),

items as (
    select * from {{ ref('stg_catalog__items') }}
),

valid_item_clicks as (
    select * from valid_clicks
    where item_id is not null
),

clicks_per_item_day as (
    select
        event_date,
        item_id,
        -- `views` is a keyword in some dialects, and the contract's column name
        sum(case when event_type = 'view' then 1 else 0 end) as views,  -- noqa: RF04
        sum(case when event_type = 'click' then 1 else 0 end) as clicks,
        sum(case when event_type = 'add_to_cart' then 1 else 0 end) as add_to_carts
    from valid_item_clicks
    group by event_date, item_id
),

orders_per_item_day as (
    select
        event_date,
        item_id,
        count(distinct order_id) as orders,
        sum(quantity) as units_sold,
        round(sum(amount), 2) as revenue
    from valid_orders
    group by event_date, item_id
),

item_days as (
    select
        event_date,
        item_id
    from clicks_per_item_day
    union distinct
    select
        event_date,
        item_id
    from orders_per_item_day
),

item_day_counts as (
    select
        item_days.event_date,
        item_days.item_id,
        items.item_title,
        items.category,
        coalesce(clicks_per_item_day.views, 0) as views,  -- noqa: RF04
        coalesce(clicks_per_item_day.clicks, 0) as clicks,
        coalesce(clicks_per_item_day.add_to_carts, 0) as add_to_carts,
        coalesce(orders_per_item_day.orders, 0) as orders,
        coalesce(orders_per_item_day.units_sold, 0) as units_sold,
        coalesce(orders_per_item_day.revenue, 0) as revenue
    from item_days
    left join clicks_per_item_day
        on
            item_days.event_date = clicks_per_item_day.event_date
            and item_days.item_id = clicks_per_item_day.item_id
    left join orders_per_item_day
        on
            item_days.event_date = orders_per_item_day.event_date
            and item_days.item_id = orders_per_item_day.item_id
    left join items on item_days.item_id = items.item_id
),

item_day_metrics as (
    select
        event_date,
        item_id,
        item_title,
        category,
        cast(views as bigint) as views,  -- noqa: RF04
        cast(clicks as bigint) as clicks,
        cast(add_to_carts as bigint) as add_to_carts,
        cast(orders as bigint) as orders,
        cast(units_sold as bigint) as units_sold,
        cast(revenue as decimal(18, 2)) as revenue,
        cast({{ round_ratio('clicks', 'views', 4) }} as decimal(9, 4)) as click_through_rate,
        cast({{ round_ratio('orders', 'views', 4) }} as decimal(9, 4)) as conversion_rate
    from item_day_counts
)

select * from item_day_metrics
