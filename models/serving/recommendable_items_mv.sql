{{ config(unique_key='item_id') }}
{#- Serving copy of recommendable_items (columns listed: a new export column is a new definition). -#}
with

recommendable_items as (
    select * from {{ ref('recommendable_items') }}
),

served as (
    select
        item_id,
        item_title,
        category,
        list_price,
        stock,
        buyer_count,
        order_count,
        units_sold,
        popularity_score,
        created_at,
        is_new,
        as_of
    from recommendable_items
)

select * from served
