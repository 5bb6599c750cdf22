{{ config(unique_key='iris_code') }}
{#- Serving copy of iris_zones (columns listed: a new export column is a new definition). -#}
with

iris_zones as (
    select * from {{ ref('iris_zones') }}
),

served as (
    select
        iris_code,
        commune_code,
        commune_name,
        department_code,
        region_name,
        iris_name,
        latitude,
        longitude
    from iris_zones
)

select * from served
