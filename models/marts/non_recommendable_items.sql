{#- One row per catalog item that must never be recommended, with the first reason that applies
    (inactive, adult, out of stock). Recommendation export table. -#}
with

items as (
    select * from {{ ref('stg_catalog__items') }}
),

as_of as (
    select * from {{ ref('int_as_of') }}
),

items_excluded as (
    select
        item_id,
        item_title,
        category,
        case
            when not coalesce(is_active, false) then 'inactive'
            when coalesce(is_adult, false) then 'adult'
            when coalesce(stock, 0) <= 0 then 'out_of_stock'
        end as reason
    from items
),

final as (
    select
        cast(items_excluded.item_id as bigint) as item_id,
        items_excluded.item_title,
        items_excluded.category,
        items_excluded.reason,
        as_of.as_of
    from items_excluded
    cross join as_of
    where items_excluded.reason is not null
)

select * from final
