{#- The "now" of every mart, one row: the `as_of` var when given (ISO-8601 text, UTC when it
    has no offset), else the newest valid event of orders and clicks. Never the wall clock, so
    that a build is reproducible. -#}
{%- set as_of = var('as_of') | string | trim -%}
{%- set iso_pattern = '^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?)?$' -%}
{%- if as_of and not modules.re.match(iso_pattern, as_of) -%}
    {{ exceptions.raise_compiler_error(
        "var as_of = '" ~ as_of ~ "' is not an ISO-8601 date or timestamp, e.g. 2026-11-20T18:00:00Z") }}
{%- endif -%}
{#- a bare date means the end of that day -#}
{%- if as_of | length == 10 %}{% set as_of = as_of ~ 'T23:59:59.999999Z' %}{% endif -%}
with

orders as (
    select * from {{ ref('orders_clean') }}
),

clicks as (
    select * from {{ ref('clicks_clean') }}
),

valid_event_times as (
    select event_ts from orders
    where is_valid and not is_duplicate
    union all
    select event_ts from clicks
    where is_valid and not is_duplicate
),

as_of_resolved as (
    {%- if as_of %}
    select {{ parse_iso_timestamp("'" ~ as_of ~ "'") }} as as_of
    {%- else %}
    select max(event_ts) as as_of
    from valid_event_times
    {%- endif %}
),

as_of_dated as (
    select
        as_of,
        cast(as_of as date) as as_of_date
    from as_of_resolved
)

select * from as_of_dated
