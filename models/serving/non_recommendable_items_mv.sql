{{ config(unique_key='item_id') }}
{#- The serving copy of non_recommendable_items: a materialized view refreshed concurrently on Postgres. -#}
with

non_recommendable_items as (
    select * from {{ ref('non_recommendable_items') }}
)

select * from non_recommendable_items
