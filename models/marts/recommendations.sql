{#- First cut: popular items of the user's favourite category that the user never bought. -#}
with

orders as (
    select * from {{ ref('orders_clean') }}
),

items as (
    select * from {{ ref('stg_catalog__items') }}
),

valid_orders as (
    select * from orders
    where is_valid and not is_duplicate
),

item_popularity as (
    select
        item_id,
        count(distinct user_id) as buyers
    from valid_orders
    group by item_id
),

recommendable_items as (
    select
        items.item_id,
        items.category,
        item_popularity.buyers,
        cast(item_popularity.buyers as double)
        / max(item_popularity.buyers) over (partition by items.category) as score
    from items
    inner join item_popularity on items.item_id = item_popularity.item_id
    where items.is_active and not items.is_adult and items.stock > 0
),

user_categories as (
    select
        user_id,
        category,
        row_number() over (partition by user_id order by count(*) desc, category) as category_rank
    from valid_orders
    group by user_id, category
),

purchases as (
    select distinct
        user_id,
        item_id
    from valid_orders
),

candidates as (
    select
        user_categories.user_id,
        recommendable_items.item_id,
        recommendable_items.score
    from user_categories
    inner join recommendable_items on user_categories.category = recommendable_items.category
    left join purchases
        on
            user_categories.user_id = purchases.user_id
            and recommendable_items.item_id = purchases.item_id
    where user_categories.category_rank = 1 and purchases.item_id is null
),

ranked as (
    select
        user_id,
        item_id,
        round(score, 6) as score,
        row_number() over (partition by user_id order by score desc, item_id asc) as recommendation_rank
    from candidates
)

select * from ranked
where recommendation_rank <= 10
