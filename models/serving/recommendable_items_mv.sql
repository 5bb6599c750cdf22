{{ config(unique_key='item_id') }}
{#- The serving copy of recommendable_items: a materialized view refreshed concurrently on Postgres. -#}
with

recommendable_items as (
    select * from {{ ref('recommendable_items') }}
)

select * from recommendable_items
