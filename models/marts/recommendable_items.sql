{#- One row per catalog item that may be recommended (active, in stock, not adult), with its
    popularity up to as_of. Recommendation export table. -#}
with

items as (
    select * from {{ ref('stg_catalog__items') }}
),

as_of as (
    select * from {{ ref('int_as_of') }}
),

valid_orders as (
    select * from {{ ref('int_valid_orders') }}
),

eligible_items as (
    select * from items
    where coalesce(is_active, false) and not coalesce(is_adult, false) and coalesce(stock, 0) > 0
),

item_sales as (
    select
        item_id,
        count(distinct user_id) as buyer_count,
        count(distinct order_id) as order_count,
        sum(quantity) as units_sold
    from valid_orders
    group by item_id
),

items_with_sales as (
    select
        eligible_items.item_id,
        eligible_items.item_title,
        eligible_items.category,
        eligible_items.list_price,
        eligible_items.stock,
        eligible_items.created_at,
        coalesce(item_sales.buyer_count, 0) as buyer_count,
        coalesce(item_sales.order_count, 0) as order_count,
        coalesce(item_sales.units_sold, 0) as units_sold
    from eligible_items
    left join item_sales on eligible_items.item_id = item_sales.item_id
),

category_leaders as (
    select
        category,
        max(buyer_count) as top_buyer_count
    from items_with_sales
    group by category
),

items_scored as (
    select
        items_with_sales.item_id,
        items_with_sales.item_title,
        items_with_sales.category,
        items_with_sales.list_price,
        items_with_sales.stock,
        items_with_sales.buyer_count,
        items_with_sales.order_count,
        items_with_sales.units_sold,
        -- buyers relative to the category's most bought item: 0 when nobody bought it
        coalesce(
            {{ round_ratio('items_with_sales.buyer_count', 'category_leaders.top_buyer_count', 6) }}, 0
        ) as popularity_score,
        items_with_sales.created_at,
        items_with_sales.created_at >= {{ hours_before('as_of.as_of', 720) }} as is_new,
        as_of.as_of
    from items_with_sales
    cross join as_of
    left join category_leaders on items_with_sales.category = category_leaders.category
),

final as (
    select
        cast(item_id as bigint) as item_id,
        item_title,
        category,
        cast(list_price as decimal(10, 2)) as list_price,
        cast(stock as integer) as stock,
        cast(buyer_count as bigint) as buyer_count,
        cast(order_count as bigint) as order_count,
        cast(units_sold as bigint) as units_sold,
        cast(popularity_score as decimal(7, 6)) as popularity_score,
        created_at,
        is_new,
        as_of
    from items_scored
)

select * from final
