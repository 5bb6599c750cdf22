{{ config(unique_key='item_id') }}
{#- Serving copy of non_recommendable_items (columns listed: a new export column is a new definition). -#}
with

non_recommendable_items as (
    select * from {{ ref('non_recommendable_items') }}
),

served as (
    select
        item_id,
        item_title,
        category,
        reason,
        as_of
    from non_recommendable_items
)

select * from served
