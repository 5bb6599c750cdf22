{{ config(unique_key='user_id') }}
{#- Serving copy of enriched_user (columns listed: a new export column is a new definition). -#}
with

enriched_user as (
    select * from {{ ref('enriched_user') }}
),

served as (
    select
        user_id,
        iris_code,
        department_code,
        region_name,
        birth_year,
        age,
        has_marketing_opt_in,
        signed_up_at,
        segment,
        order_count,
        lifetime_value,
        engagement_score,
        favourite_category,
        last_activity_at,
        as_of
    from enriched_user
)

select * from served
