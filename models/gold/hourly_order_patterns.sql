{#- One row per (ISO day of week, UTC hour) with valid orders, over all dates up to as_of. -#}
with

valid_orders as (
    select * from {{ ref('int_valid_orders') }}
),

weekdays as (
    select * from {{ ref('weekdays') }}
),

order_lines_by_hour as (
    select
        {{ iso_day_of_week('event_ts') }} as day_of_week,
        {{ hour_of_day('event_ts') }} as hour_of_day,
        event_date,
        order_id,
        quantity,
        amount
    from valid_orders
),

hourly_totals as (
    select
        day_of_week,
        hour_of_day,
        count(distinct order_id) as order_count,
        sum(quantity) as items_sold,
        round(sum(amount), 2) as gmv,
        count(distinct event_date) as active_days
    from order_lines_by_hour
    group by day_of_week, hour_of_day
),

all_orders as (
    select count(distinct order_id) as order_count
    from valid_orders
),

hourly_patterns as (
    select
        hourly_totals.day_of_week,
        weekdays.day_name,
        hourly_totals.hour_of_day,
        cast(hourly_totals.order_count as bigint) as order_count,
        cast(hourly_totals.items_sold as bigint) as items_sold,
        cast(hourly_totals.gmv as decimal(18, 2)) as gmv,
        cast(hourly_totals.active_days as bigint) as active_days,
        cast(
            {{ round_ratio('hourly_totals.order_count', 'hourly_totals.active_days', 2) }} as decimal(18, 2)
        ) as avg_orders_per_day,
        cast(
            {{ round_ratio('hourly_totals.order_count * 100', 'all_orders.order_count', 2) }} as decimal(9, 2)
        ) as share_of_orders_pct
    from hourly_totals
    cross join all_orders
    inner join weekdays on hourly_totals.day_of_week = weekdays.day_of_week
)

select * from hourly_patterns
