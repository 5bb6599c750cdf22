{#- One row per IRIS zone, from the INSEE seed; codes stay text. Recommendation export table. -#}
with

zones as (
    select * from {{ ref('insee_iris_zones') }}
),

final as (
    select
        iris_code,
        commune_code,
        commune_name,
        department_code,
        region_name,
        iris_name,
        cast(latitude as decimal(9, 6)) as latitude,
        cast(longitude as decimal(9, 6)) as longitude
    from zones
)

select * from final
