with

source as (
    select * from {{ source('app', 'users') }}
),

renamed as (
    select
        cast(user_id as bigint) as user_id,
        cast(email as {{ dbt.type_string() }}) as email,
        cast(display_name as {{ dbt.type_string() }}) as display_name,
        cast(iris_code as {{ dbt.type_string() }}) as iris_code,
        cast(birth_year as integer) as birth_year,
        -- SQLite keeps booleans as 0/1; via integer so that every engine accepts the cast
        cast(cast(marketing_opt_in as integer) as boolean) as has_marketing_opt_in,
        {{ to_utc_timestamp('signup_at') }} as signed_up_at,
        {{ to_utc_timestamp('updated_at') }} as updated_at,
        {{ to_utc_timestamp('last_login_at') }} as last_login_at
    from source
)

select * from renamed
