{#- Valid, original click events up to as_of: what gold and the marts count. One row per click event. -#}
with

clicks as (
    select * from {{ ref('clicks_clean') }}
),

as_of as (
    select * from {{ ref('int_as_of') }}
),

valid_clicks as (
    select
        clicks.event_id,
        clicks.user_id,
        clicks.session_id,
        clicks.item_id,
        clicks.event_type,
        clicks.search_query,
        clicks.event_ts,
        clicks.event_date,
        as_of.as_of,
        as_of.as_of_date,
        clicks.source_file,
        clicks.source_line
    from clicks
    cross join as_of
    where clicks.is_valid and not clicks.is_duplicate and clicks.event_ts <= as_of.as_of
)

select * from valid_clicks
