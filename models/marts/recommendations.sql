{#- Per user, up to 10 recommendable items of their favourite category that they never bought,
    the category's most popular first. -#}
with

recommendable_items as (
    select * from {{ ref('recommendable_items') }}
),

favourite_categories as (
    select * from {{ ref('int_user_favourite_categories') }}
),

valid_orders as (
    select * from {{ ref('int_valid_orders') }}
),

purchases as (
    select distinct
        user_id,
        item_id
    from valid_orders
),

candidates as (
    select
        favourite_categories.user_id,
        recommendable_items.item_id,
        recommendable_items.popularity_score as score
    from favourite_categories
    inner join recommendable_items
        on favourite_categories.favourite_category = recommendable_items.category
    left join purchases
        on
            favourite_categories.user_id = purchases.user_id
            and recommendable_items.item_id = purchases.item_id
    where recommendable_items.buyer_count > 0 and purchases.item_id is null
),

candidates_ranked as (
    select
        user_id,
        item_id,
        score,
        row_number() over (partition by user_id order by score desc, item_id asc) as recommendation_rank
    from candidates
),

final as (
    select
        cast(user_id as bigint) as user_id,
        cast(item_id as bigint) as item_id,
        cast(score as {{ type_double() }}) as score,
        cast(recommendation_rank as integer) as recommendation_rank
    from candidates_ranked
    where recommendation_rank <= 10
)

select * from final
