{{ config(unique_key='item_id') }}
{#- Every catalog item id the recommender may meet, and whether it may be recommended. -#}
with

recommendable_items as (
    select * from {{ ref('recommendable_items') }}
),

non_recommendable_items as (
    select * from {{ ref('non_recommendable_items') }}
),

item_ids as (
    select
        item_id,
        category,
        true as is_recommendable
    from recommendable_items
    union all
    select
        item_id,
        category,
        false as is_recommendable
    from non_recommendable_items
)

select * from item_ids
