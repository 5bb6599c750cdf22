{#- Gold reconciles with the rows it is made of: each day of `daily_gmv_metrics` has the GMV
    (rounded to cents), the orders and the items of that day's valid order lines, and every day
    with such lines has its row. With the Spark engine, gold comes from Spark and the valid lines
    from dbt: the two engines are checked against each other. A row here is a day that differs. -#}
with

daily_gmv as (
    select * from {{ ref('daily_gmv_metrics') }}
),

valid_orders as (
    select * from {{ ref('int_valid_orders') }}
),

order_lines_per_day as (
    select
        event_date,
        round(sum(amount), 2) as gmv,
        count(distinct order_id) as order_count,
        sum(quantity) as items_sold
    from valid_orders
    group by event_date
),

days_that_differ as (
    select
        coalesce(daily_gmv.event_date, order_lines_per_day.event_date) as event_date,
        daily_gmv.gmv as gold_gmv,
        order_lines_per_day.gmv as order_lines_gmv,
        daily_gmv.order_count as gold_order_count,
        order_lines_per_day.order_count as order_lines_order_count
    from daily_gmv
    full outer join order_lines_per_day
        on daily_gmv.event_date = order_lines_per_day.event_date
    where
        daily_gmv.event_date is null
        or order_lines_per_day.event_date is null
        or daily_gmv.gmv != order_lines_per_day.gmv
        or daily_gmv.order_count != order_lines_per_day.order_count
        or daily_gmv.items_sold != order_lines_per_day.items_sold
)

select * from days_that_differ
