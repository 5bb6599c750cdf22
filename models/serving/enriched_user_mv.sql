{{ config(unique_key='user_id') }}
{#- The serving copy of enriched_user: a materialized view refreshed concurrently on Postgres. -#}
with

enriched_user as (
    select * from {{ ref('enriched_user') }}
)

select * from enriched_user
