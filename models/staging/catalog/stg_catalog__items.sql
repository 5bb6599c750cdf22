with

source as (
    select * from {{ source('catalog', 'items') }}
),

renamed as (
    select
        cast(item_id as bigint) as item_id,
        title as item_title,
        category,
        cast(price as decimal(10, 2)) as list_price,
        cast(stock as integer) as stock,
        cast(is_active as boolean) as is_active,
        cast(is_adult as boolean) as is_adult,
        cast(created_at as timestamp) as created_at,
        cast(updated_at as timestamp) as updated_at
    from source
)

select * from renamed
