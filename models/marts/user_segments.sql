{#- One row per app user: totals up to as_of, an engagement score and one segment, the first
    rule that matches (seed customer_segments lists them in order). -#}
with

users as (
    select * from {{ ref('stg_app__users') }}
),

as_of as (
    select * from {{ ref('int_as_of') }}
),

valid_orders as (
    select * from {{ ref('int_valid_orders') }}
),

valid_clicks as (
    select * from {{ ref('int_valid_clicks') }}
),

order_totals as (
    select
        user_id,
        sum(amount) as lifetime_value,
        count(distinct order_id) as order_count,
        min(event_ts) as first_order_at,
        max(event_ts) as last_order_at,
        max(case when event_ts >= {{ hours_before('as_of', 48) }} then 1 else 0 end) as has_order_in_48_hours
    from valid_orders
    group by user_id
),

search_totals as (
    select
        user_id,
        max(case when event_type = 'search' and event_ts >= {{ hours_before('as_of', 48) }} then 1 else 0 end)
            as has_search_in_48_hours
    from valid_clicks
    group by user_id
),

user_events as (
    select
        user_id,
        event_ts,
        event_date,
        as_of
    from valid_orders
    union all
    select
        user_id,
        event_ts,
        event_date,
        as_of
    from valid_clicks
),

activity_totals as (
    select
        user_id,
        max(event_ts) as last_activity_at,
        count(distinct case when event_ts > {{ hours_before('as_of', 720) }} then event_date end)
            as active_days_in_30_days
    from user_events
    group by user_id
),

users_summarized as (
    select
        users.user_id,
        users.email,
        users.display_name,
        users.has_marketing_opt_in,
        users.signed_up_at,
        coalesce(order_totals.lifetime_value, 0) as lifetime_value,
        coalesce(order_totals.order_count, 0) as order_count,
        order_totals.first_order_at,
        order_totals.last_order_at,
        coalesce(order_totals.has_order_in_48_hours, 0) as has_order_in_48_hours,
        coalesce(search_totals.has_search_in_48_hours, 0) as has_search_in_48_hours,
        activity_totals.last_activity_at,
        -- dbt's own datediff renders one long line, with a space before its closing bracket
        {{ dbt.datediff('cast(activity_totals.last_activity_at as date)', 'as_of.as_of_date', 'day') }}  -- noqa: LT01,LT05
            as days_since_last_activity,
        coalesce(activity_totals.active_days_in_30_days, 0) as active_days_in_30_days,
        as_of.as_of,
        as_of.as_of_date
    from users
    cross join as_of
    left join order_totals on users.user_id = order_totals.user_id
    left join search_totals on users.user_id = search_totals.user_id
    left join activity_totals on users.user_id = activity_totals.user_id
),

users_segmented as (
    select
        *,
        case
            when lifetime_value > 500 or order_count >= 5 then 'high_value'
            when signed_up_at >= {{ hours_before('as_of', 168) }} then 'new_user'
            when order_count > 0 and last_activity_at < {{ hours_before('as_of', 720) }} then 'at_risk'
            when has_search_in_48_hours = 1 and has_order_in_48_hours = 0 then 'abandoned_search'
            else 'regular'
        end as segment,
        -- recency 0-30 (a point per day under 30 since the last activity), frequency 0-30
        -- (6 per order, up to 5), activity 0-40 (4 per active day in the last 30, up to 10)
        coalesce(greatest(0, 30 - days_since_last_activity), 0)
        + 6 * least(order_count, 5)
        + 4 * least(active_days_in_30_days, 10) as engagement_score
    from users_summarized
),

final as (
    select
        user_id,
        email,
        display_name,
        segment,
        cast(lifetime_value as decimal(18, 2)) as lifetime_value,
        cast(order_count as bigint) as order_count,
        first_order_at,
        last_order_at,
        last_activity_at,
        cast(days_since_last_activity as integer) as days_since_last_activity,
        signed_up_at,
        cast(engagement_score as integer) as engagement_score,
        has_marketing_opt_in,
        as_of
    from users_segmented
)

select * from final
