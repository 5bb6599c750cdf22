with

source as (
    select * from {{ source('catalog', 'items') }}
),

renamed as (
    select
        cast(item_id as bigint) as item_id,
        cast(title as {{ dbt.type_string() }}) as item_title,
        cast(category as {{ dbt.type_string() }}) as category,
        cast(price as decimal(10, 2)) as list_price,
        cast(stock as integer) as stock,
        cast(is_active as boolean) as is_active,
        cast(is_adult as boolean) as is_adult,
        {{ to_utc_timestamp('created_at') }} as created_at,
        {{ to_utc_timestamp('updated_at') }} as updated_at,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at
    from source
)

select * from renamed
