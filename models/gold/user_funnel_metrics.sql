{#- One row per event_date with valid clicks or valid orders up to as_of: session-days through
    the funnel. -#}
with

valid_orders as (
    select * from {{ ref('int_valid_orders') }}
),

valid_clicks as (
    select * from {{ ref('int_valid_clicks') }}
),

session_day_steps as (
    select
        event_date,
        session_id,
        max(case when event_type = 'search' then 1 else 0 end) as has_search,
        max(case when event_type = 'view' then 1 else 0 end) as has_view,
        max(case when event_type = 'click' then 1 else 0 end) as has_click,
        max(case when event_type = 'add_to_cart' then 1 else 0 end) as has_add_to_cart,
        0 as has_order
    from valid_clicks
    where session_id is not null
    group by event_date, session_id

    union all

    select
        event_date,
        session_id,
        0 as has_search,
        0 as has_view,
        0 as has_click,
        0 as has_add_to_cart,
        1 as has_order
    from valid_orders
    where session_id is not null
    group by event_date, session_id
),

session_days as (
    select
        event_date,
        session_id,
        max(has_search) as has_search,
        max(has_view) as has_view,
        max(has_click) as has_click,
        max(has_add_to_cart) as has_add_to_cart,
        max(has_order) as has_order
    from session_day_steps
    group by event_date, session_id
),

daily_sessions as (
    select
        event_date,
        count(*) as sessions,
        sum(has_search) as search_sessions,
        sum(has_view) as view_sessions,
        sum(has_click) as click_sessions,
        sum(has_add_to_cart) as add_to_cart_sessions,
        sum(has_order) as order_sessions
    from session_days
    group by event_date
),

daily_active_users as (
    select
        event_date,
        count(distinct user_id) as active_users
    from (
        select
            event_date,
            user_id
        from valid_clicks
        union all
        select
            event_date,
            user_id
        from valid_orders
    ) as active
    group by event_date
),

daily_funnel as (
    select
        daily_active_users.event_date,
        cast(coalesce(daily_sessions.sessions, 0) as bigint) as sessions,
        cast(coalesce(daily_sessions.search_sessions, 0) as bigint) as search_sessions,
        cast(coalesce(daily_sessions.view_sessions, 0) as bigint) as view_sessions,
        cast(coalesce(daily_sessions.click_sessions, 0) as bigint) as click_sessions,
        cast(coalesce(daily_sessions.add_to_cart_sessions, 0) as bigint) as add_to_cart_sessions,
        cast(coalesce(daily_sessions.order_sessions, 0) as bigint) as order_sessions,
        cast(daily_active_users.active_users as bigint) as active_users,
        cast(
            {{ round_ratio('daily_sessions.order_sessions', 'daily_sessions.sessions', 4) }} as decimal(9, 4)
        ) as session_conversion_rate
    from daily_active_users
    left join daily_sessions on daily_active_users.event_date = daily_sessions.event_date
)

select * from daily_funnel
