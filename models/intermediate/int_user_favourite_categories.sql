{#- One row per buyer: the category of most of their valid order lines up to as_of (ties: the
    first category name byte-wise). -#}
with

valid_orders as (
    select * from {{ ref('int_valid_orders') }}
),

category_lines as (
    select
        user_id,
        category,
        count(*) as order_lines
    from valid_orders
    group by user_id, category
),

categories_ranked as (
    select
        user_id,
        category,
        order_lines,
        row_number() over (
            partition by user_id
            order by order_lines desc, {{ bytewise('category') }} asc
        ) as category_rank
    from category_lines
),

favourite_categories as (
    select
        user_id,
        category as favourite_category,
        order_lines as favourite_category_order_lines
    from categories_ranked
    where category_rank = 1
)

select * from favourite_categories
