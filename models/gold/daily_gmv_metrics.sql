{#- One row per UTC event_date with valid, original orders up to as_of (int_valid_orders). -#}
with

valid_orders as (
    select * from {{ ref('int_valid_orders') }}
),

first_order_dates as (
    select
        user_id,
        min(event_date) as first_order_date
    from valid_orders
    group by user_id
),

new_users_per_day as (
    select
        first_order_date as event_date,
        count(*) as new_users
    from first_order_dates
    group by first_order_date
),

daily_totals as (
    select
        event_date,
        round(sum(amount), 2) as gmv,
        count(distinct order_id) as order_count,
        sum(quantity) as items_sold,
        count(distinct user_id) as unique_users
    from valid_orders
    group by event_date
),

daily_metrics as (
    select
        daily_totals.event_date,
        daily_totals.gmv,
        daily_totals.order_count,
        daily_totals.items_sold,
        daily_totals.unique_users,
        {{ round_ratio('daily_totals.gmv', 'daily_totals.order_count') }} as avg_order_value,
        coalesce(new_users_per_day.new_users, 0) as new_users,
        daily_totals.unique_users - coalesce(new_users_per_day.new_users, 0) as returning_users,
        {{ round_ratio('(daily_totals.gmv - previous_day.gmv) * 100', 'previous_day.gmv') }} as gmv_growth_pct
    from daily_totals
    left join new_users_per_day
        on daily_totals.event_date = new_users_per_day.event_date
    left join daily_totals as previous_day
        on {{ previous_day('daily_totals.event_date') }} = previous_day.event_date
),

final as (
    select
        event_date,
        cast(gmv as decimal(18, 2)) as gmv,
        cast(order_count as bigint) as order_count,
        cast(items_sold as bigint) as items_sold,
        cast(unique_users as bigint) as unique_users,
        cast(avg_order_value as decimal(18, 2)) as avg_order_value,
        cast(new_users as bigint) as new_users,
        cast(returning_users as bigint) as returning_users,
        cast(gmv_growth_pct as decimal(18, 2)) as gmv_growth_pct
    from daily_metrics
)

select * from final
