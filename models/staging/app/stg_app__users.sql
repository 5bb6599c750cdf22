with

source as (
    select * from {{ source('app', 'users') }}
),

renamed as (
    select
        cast(user_id as bigint) as user_id,
        email,
        display_name,
        iris_code,
        cast(birth_year as integer) as birth_year,
        cast(marketing_opt_in as boolean) as has_marketing_opt_in,
        cast(signup_at as timestamp) as signed_up_at,
        cast(updated_at as timestamp) as updated_at,
        cast(last_login_at as timestamp) as last_login_at
    from source
)

select * from renamed
