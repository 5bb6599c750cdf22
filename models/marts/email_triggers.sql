{#- One row per (user, trigger type, day) over the `trigger_lookback_days` days that end on the
    as_of date. Marketing triggers go only to users who opted in; every trigger needs an email.
    The payload is compact JSON text, identical on every engine. -#}
{%- set base_url = var('shop_base_url') -%}
with

users as (
    select * from {{ ref('user_segments') }}
),

trigger_types as (
    select * from {{ ref('email_trigger_types') }}
),

items as (
    select * from {{ ref('stg_catalog__items') }}
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

trigger_window as (
    select
        as_of,
        as_of_date,
        {{ days_before('as_of_date', var('trigger_lookback_days') - 1) }} as first_trigger_date
    from as_of
),

clicks_in_window as (
    select valid_clicks.*
    from valid_clicks
    cross join trigger_window
    where valid_clicks.event_date >= trigger_window.first_trigger_date
),

orders_in_window as (
    select valid_orders.*
    from valid_orders
    cross join trigger_window
    where valid_orders.event_date >= trigger_window.first_trigger_date
),

welcomes as (
    select
        users.user_id,
        'welcome' as trigger_type,
        cast(users.signed_up_at as date) as trigger_date,
        cast(null as bigint) as item_id,
        cast(null as {{ dbt.type_string() }}) as search_query,
        cast(null as bigint) as item_count
    from users
    cross join trigger_window
    where
        users.signed_up_at <= trigger_window.as_of
        and cast(users.signed_up_at as date) >= trigger_window.first_trigger_date
),

carts_not_ordered as (
    -- items put in the cart on a day and not ordered by the same user that day
    select
        clicks_in_window.user_id,
        clicks_in_window.event_date,
        clicks_in_window.item_id,
        clicks_in_window.event_ts,
        clicks_in_window.event_id
    from clicks_in_window
    left join orders_in_window
        on
            clicks_in_window.user_id = orders_in_window.user_id
            and clicks_in_window.item_id = orders_in_window.item_id
            and clicks_in_window.event_date = orders_in_window.event_date
    where clicks_in_window.event_type = 'add_to_cart' and orders_in_window.order_id is null
),

cart_item_counts as (
    select
        user_id,
        event_date,
        count(distinct item_id) as item_count
    from carts_not_ordered
    group by user_id, event_date
),

abandoned_carts as (
    select
        carts_not_ordered.user_id,
        'abandoned_cart' as trigger_type,
        carts_not_ordered.event_date as trigger_date,
        carts_not_ordered.item_id,
        cast(null as {{ dbt.type_string() }}) as search_query,
        cart_item_counts.item_count,
        -- the payload names the item put in the cart last
        row_number() over (
            partition by carts_not_ordered.user_id, carts_not_ordered.event_date
            order by carts_not_ordered.event_ts desc, {{ bytewise('carts_not_ordered.event_id') }} desc
        ) as recency_rank
    from carts_not_ordered
    inner join cart_item_counts
        on
            carts_not_ordered.user_id = cart_item_counts.user_id
            and carts_not_ordered.event_date = cart_item_counts.event_date
),

last_abandoned_carts as (
    select * from abandoned_carts
    where recency_rank = 1
),

user_order_days as (
    select distinct
        user_id,
        event_date
    from orders_in_window
),

searches_not_followed as (
    -- searches on a day when the user ordered nothing
    select
        clicks_in_window.user_id,
        clicks_in_window.event_date,
        clicks_in_window.search_query,
        clicks_in_window.event_ts,
        clicks_in_window.event_id
    from clicks_in_window
    left join user_order_days
        on
            clicks_in_window.user_id = user_order_days.user_id
            and clicks_in_window.event_date = user_order_days.event_date
    where clicks_in_window.event_type = 'search' and user_order_days.user_id is null
),

abandoned_searches as (
    select
        user_id,
        'abandoned_search' as trigger_type,
        event_date as trigger_date,
        cast(null as bigint) as item_id,
        search_query,
        cast(null as bigint) as item_count,
        row_number() over (
            partition by user_id, event_date
            order by event_ts desc, {{ bytewise('event_id') }} desc
        ) as recency_rank
    from searches_not_followed
),

last_abandoned_searches as (
    select * from abandoned_searches
    where recency_rank = 1
),

win_backs as (
    select
        users.user_id,
        'win_back' as trigger_type,
        trigger_window.as_of_date as trigger_date,
        cast(null as bigint) as item_id,
        cast(null as {{ dbt.type_string() }}) as search_query,
        cast(null as bigint) as item_count
    from users
    cross join trigger_window
    where users.segment = 'at_risk'
),

triggers as (
    select
        user_id,
        trigger_type,
        trigger_date,
        item_id,
        search_query,
        item_count
    from welcomes
    union all
    select
        user_id,
        trigger_type,
        trigger_date,
        item_id,
        search_query,
        item_count
    from last_abandoned_carts
    union all
    select
        user_id,
        trigger_type,
        trigger_date,
        item_id,
        search_query,
        item_count
    from last_abandoned_searches
    union all
    select
        user_id,
        trigger_type,
        trigger_date,
        item_id,
        search_query,
        item_count
    from win_backs
),

triggers_addressed as (
    select
        triggers.*,
        users.email,
        users.display_name,
        users.days_since_last_activity,
        trigger_types.subject,
        trigger_types.campaign,
        items.item_title,
        trigger_window.as_of,
        trigger_window.as_of_date
    from triggers
    inner join users on triggers.user_id = users.user_id
    inner join trigger_types on triggers.trigger_type = trigger_types.trigger_type
    left join items on triggers.item_id = items.item_id
    cross join trigger_window
    where
        users.email is not null
        and (not trigger_types.is_marketing or users.has_marketing_opt_in)
),

triggers_with_links as (
    select
        *,
        case trigger_type
            when 'abandoned_cart'
                then '{{ base_url }}/items/' || cast(item_id as {{ dbt.type_string() }}) || '?'
            when 'abandoned_search'
                then '{{ base_url }}/search?q=' || {{ url_encode("coalesce(search_query, '')") }} || '&'
            else '{{ base_url }}/?'
        end || 'utm_source=email&utm_campaign=' || campaign as link
    from triggers_addressed
),

final as (
    select
        {{ surrogate_key(['user_id', 'trigger_type', 'trigger_date']) }} as trigger_id,
        cast(user_id as bigint) as user_id,
        email,
        trigger_type,
        trigger_date,
        subject,
        {{ json_object_text([
            ('trigger_type', 'trigger_type', 'text'),
            ('subject', 'subject', 'text'),
            ('display_name', 'display_name', 'text'),
            ('item_id', 'item_id', 'integer'),
            ('item_title', 'item_title', 'text'),
            ('item_count', 'item_count', 'integer'),
            ('search_query', 'search_query', 'text'),
            ('days_inactive', "case when trigger_type = 'win_back' then days_since_last_activity end", 'integer'),
            ('link', 'link', 'text'),
        ]) }} as payload,
        as_of
    from triggers_with_links
)

select * from final
