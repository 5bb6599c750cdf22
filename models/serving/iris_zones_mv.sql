{{ config(unique_key='iris_code') }}
{#- The serving copy of iris_zones: a materialized view refreshed concurrently on Postgres. -#}
with

iris_zones as (
    select * from {{ ref('iris_zones') }}
)

select * from iris_zones
