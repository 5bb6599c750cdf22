{#- One row per app user: profile, zone and purchase behaviour for the recommender.
    Recommendation export table. -#}
with

users as (
    select * from {{ ref('stg_app__users') }}
),

segments as (
    select * from {{ ref('user_segments') }}
),

zones as (
    select * from {{ ref('iris_zones') }}
),

favourite_categories as (
    select * from {{ ref('int_user_favourite_categories') }}
),

users_enriched as (
    select
        users.user_id,
        users.iris_code,
        zones.department_code,
        zones.region_name,
        users.birth_year,
        cast(extract(year from segments.as_of) as integer) - users.birth_year as age,
        users.has_marketing_opt_in,
        users.signed_up_at,
        segments.segment,
        segments.order_count,
        segments.lifetime_value,
        segments.engagement_score,
        favourite_categories.favourite_category,
        segments.last_activity_at,
        segments.as_of
    from users
    inner join segments on users.user_id = segments.user_id
    left join zones on users.iris_code = zones.iris_code
    left join favourite_categories on users.user_id = favourite_categories.user_id
),

final as (
    select
        cast(user_id as bigint) as user_id,
        iris_code,
        department_code,
        region_name,
        cast(birth_year as integer) as birth_year,
        cast(age as integer) as age,
        has_marketing_opt_in,
        signed_up_at,
        segment,
        order_count,
        lifetime_value,
        engagement_score,
        favourite_category,
        last_activity_at,
        as_of
    from users_enriched
)

select * from final
