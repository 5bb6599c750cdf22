{#- The contract of `recommendations` (docs/contract.md): never an item the user already bought.
    A row here is a recommendation of an item the user has a valid order line for, up to as_of. -#}
with

recommendations as (
    select * from {{ ref('recommendations') }}
),

valid_orders as (
    select * from {{ ref('int_valid_orders') }}
),

recommended_after_buying as (
    select
        recommendations.user_id,
        recommendations.item_id,
        recommendations.recommendation_rank
    from recommendations
    inner join valid_orders
        on
            recommendations.user_id = valid_orders.user_id
            and recommendations.item_id = valid_orders.item_id
)

select * from recommended_after_buying
