{#- Time: parsing event text, UTC conversion, arithmetic and calendar parts. Dialect differences
    live here, behind adapter.dispatch; models never test target.type. -#}

{#- ISO-8601 text -> UTC timestamp; NULL when NULL or not ISO-8601 (no guessing at other
    shapes: '1700000000' or '20/11/2026' are invalid). No offset means UTC. The edges are one
    rule on every engine (docs/contract.md, "Timestamps"): years 0001-9999, hours 00-23 (no
    24:00:00), seconds 00-59 (no leap second), offsets up to ±14:59, a real calendar day (no
    30 February), and the UTC instant itself within 0001-01-01 and 9999-12-31. -#}
{% macro parse_iso_timestamp(text) -%}
    {{ return(adapter.dispatch('parse_iso_timestamp', 'roundtrip')(text)) }}
{%- endmacro %}

{% macro iso_timestamp_pattern() -%}
    '^(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-](0[0-9]|1[0-4]):[0-5][0-9])?$'
{%- endmacro %}

{#- Text without an offset is UTC: a 'Z' is added before parsing, so that the session time
    zone never leaks into the result. -#}
{% macro with_utc_default(text) -%}
    case when {{ text }} like '%Z' or {{ text }} like '%+__:__' or {{ text }} like '%-__:__'
        then {{ text }} else {{ text }} || 'Z' end
{%- endmacro %}

{#- A UTC timestamp, or NULL outside 0001-01-01 .. 9999-12-31 (an offset can move year 1 or
    year 9999 across; engines disagree about what lies beyond). -#}
{% macro within_timestamp_range(timestamp_expression) -%}
    case
        when {{ timestamp_expression }} between timestamp '0001-01-01 00:00:00'
            and timestamp '9999-12-31 23:59:59.999999' then {{ timestamp_expression }}
    end
{%- endmacro %}

{% macro default__parse_iso_timestamp(text) -%}
    case
        when regexp_matches({{ text }}, {{ iso_timestamp_pattern() }})
            then {{ within_timestamp_range(
                "cast(timezone('UTC', try_cast(" ~ with_utc_default(text) ~ " as timestamptz)) as timestamp)"
            ) }}
    end
{%- endmacro %}

{% macro postgres__parse_iso_timestamp(text) -%}
    case
        when {{ text }} ~ {{ iso_timestamp_pattern() }}
            and pg_input_is_valid({{ with_utc_default(text) }}, 'timestamptz')
            then {{ within_timestamp_range(
                "(cast(" ~ with_utc_default(text) ~ " as timestamptz) at time zone 'UTC')"
            ) }}
    end
{%- endmacro %}

{#- BigQuery's TIMESTAMP ends at year 1 and 9999 already: safe_cast is NULL beyond. -#}
{% macro bigquery__parse_iso_timestamp(text) -%}
    case
        when regexp_contains({{ text }}, r{{ iso_timestamp_pattern() }})
            then safe_cast({{ with_utc_default(text) }} as timestamp)
    end
{%- endmacro %}

{#- A time-zone-aware timestamp (what the loaders write) -> the UTC timestamp every model uses.
    A plain cast would use the session time zone on Postgres. -#}
{% macro to_utc_timestamp(expression) -%}
    {{ return(adapter.dispatch('to_utc_timestamp', 'roundtrip')(expression)) }}
{%- endmacro %}

{% macro default__to_utc_timestamp(expression) -%}
    cast(timezone('UTC', {{ expression }}) as timestamp)
{%- endmacro %}

{% macro postgres__to_utc_timestamp(expression) -%}
    ({{ expression }} at time zone 'UTC')
{%- endmacro %}

{#- BigQuery's TIMESTAMP is an instant already. -#}
{% macro bigquery__to_utc_timestamp(expression) -%}
    cast({{ expression }} as timestamp)
{%- endmacro %}

{#- `timestamp - hours`: exact durations (7 days = 168 hours), no calendar arithmetic. -#}
{% macro hours_before(timestamp_expression, hours) -%}
    {{ return(adapter.dispatch('hours_before', 'roundtrip')(timestamp_expression, hours)) }}
{%- endmacro %}

{% macro default__hours_before(timestamp_expression, hours) -%}
    ({{ timestamp_expression }} - interval '{{ hours }} hours')
{%- endmacro %}

{% macro bigquery__hours_before(timestamp_expression, hours) -%}
    timestamp_sub({{ timestamp_expression }}, interval {{ hours }} hour)
{%- endmacro %}

{#- A date `days` days earlier. -#}
{% macro days_before(date_expression, days) -%}
    {{ return(adapter.dispatch('days_before', 'roundtrip')(date_expression, days)) }}
{%- endmacro %}

{% macro default__days_before(date_expression, days) -%}
    cast({{ date_expression }} - interval '{{ days }} days' as date)
{%- endmacro %}

{% macro postgres__days_before(date_expression, days) -%}
    ({{ date_expression }} - {{ days }})
{%- endmacro %}

{% macro bigquery__days_before(date_expression, days) -%}
    date_sub({{ date_expression }}, interval {{ days }} day)
{%- endmacro %}

{#- The day before a date. -#}
{% macro previous_day(date_expression) -%}
    {{ days_before(date_expression, 1) }}
{%- endmacro %}

{#- ISO day of the week of a UTC timestamp: 1 = Monday ... 7 = Sunday. -#}
{% macro iso_day_of_week(timestamp_expression) -%}
    {{ return(adapter.dispatch('iso_day_of_week', 'roundtrip')(timestamp_expression)) }}
{%- endmacro %}

{% macro default__iso_day_of_week(timestamp_expression) -%}
    cast(isodow({{ timestamp_expression }}) as integer)
{%- endmacro %}

{% macro postgres__iso_day_of_week(timestamp_expression) -%}
    cast(extract(isodow from {{ timestamp_expression }}) as integer)
{%- endmacro %}

{#- BigQuery's DAYOFWEEK is 1 = Sunday ... 7 = Saturday. -#}
{% macro bigquery__iso_day_of_week(timestamp_expression) -%}
    mod(extract(dayofweek from {{ timestamp_expression }} at time zone 'UTC') + 5, 7) + 1
{%- endmacro %}

{#- Hour of the day (0-23) of a UTC timestamp, as an integer. -#}
{% macro hour_of_day(timestamp_expression) -%}
    {{ return(adapter.dispatch('hour_of_day', 'roundtrip')(timestamp_expression)) }}
{%- endmacro %}

{% macro default__hour_of_day(timestamp_expression) -%}
    cast(extract(hour from {{ timestamp_expression }}) as integer)
{%- endmacro %}

{% macro bigquery__hour_of_day(timestamp_expression) -%}
    extract(hour from {{ timestamp_expression }} at time zone 'UTC')
{%- endmacro %}
