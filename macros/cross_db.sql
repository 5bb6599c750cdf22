{#- Dialect differences live here, behind adapter.dispatch; models never test target.type. -#}

{#- ISO-8601 text -> UTC timestamp; NULL when NULL or not ISO-8601 (no guessing at other
    shapes: '1700000000' or '20/11/2026' are invalid). No offset means UTC. -#}
{% macro parse_iso_timestamp(text) -%}
    {{ return(adapter.dispatch('parse_iso_timestamp', 'roundtrip')(text)) }}
{%- endmacro %}

{% macro iso_timestamp_pattern() -%}
    '^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})?$'
{%- endmacro %}

{#- Text without an offset is UTC: a 'Z' is added before parsing, so that the session time
    zone never leaks into the result. -#}
{% macro with_utc_default(text) -%}
    case when {{ text }} like '%Z' or {{ text }} like '%+__:__' or {{ text }} like '%-__:__'
        then {{ text }} else {{ text }} || 'Z' end
{%- endmacro %}

{% macro default__parse_iso_timestamp(text) -%}
    case
        when regexp_matches({{ text }}, {{ iso_timestamp_pattern() }})
            then cast(timezone('UTC', try_cast({{ with_utc_default(text) }} as timestamptz)) as timestamp)
    end
{%- endmacro %}

{% macro postgres__parse_iso_timestamp(text) -%}
    case
        when {{ text }} ~ {{ iso_timestamp_pattern() }}
            and pg_input_is_valid({{ with_utc_default(text) }}, 'timestamptz')
            then cast({{ with_utc_default(text) }} as timestamptz) at time zone 'UTC'
    end
{%- endmacro %}

{% macro bigquery__parse_iso_timestamp(text) -%}
    case
        when regexp_contains({{ text }}, r{{ iso_timestamp_pattern() }})
            then safe_cast({{ with_utc_default(text) }} as timestamp)
    end
{%- endmacro %}

{#- Safe casts: NULL instead of an error when the text does not fit the type. -#}
{% macro safe_cast(expression, type) -%}
    {{ return(adapter.dispatch('safe_cast', 'roundtrip')(expression, type)) }}
{%- endmacro %}

{% macro default__safe_cast(expression, type) -%}
    try_cast({{ expression }} as {{ type }})
{%- endmacro %}

{% macro bigquery__safe_cast(expression, type) -%}
    safe_cast({{ expression }} as {{ type }})
{%- endmacro %}

{#- PostgreSQL 16+ validates input without raising (the project's server is 18). -#}
{% macro postgres__safe_cast(expression, type) -%}
    case when pg_input_is_valid({{ expression }}, '{{ type }}') then cast({{ expression }} as {{ type }}) end
{%- endmacro %}

{#- Failed rule codes joined by ',' in the order given; NULL when none failed. -#}
{% macro join_codes(conditions) -%}
    {{ return(adapter.dispatch('join_codes', 'roundtrip')(conditions)) }}
{%- endmacro %}

{% macro default__join_codes(conditions) -%}
    nullif(concat_ws(','
        {%- for code, condition in conditions %},
        case when {{ condition }} then '{{ code }}' end
        {%- endfor %}
    ), '')
{%- endmacro %}

{% macro bigquery__join_codes(conditions) -%}
    nullif(array_to_string([
        {%- for code, condition in conditions %}
        case when {{ condition }} then '{{ code }}' end{{ ',' if not loop.last }}
        {%- endfor %}
    ], ','), '')
{%- endmacro %}

{#- round(numerator / denominator, scale), exact and half away from zero on every engine.
    DuckDB divides decimals in DOUBLE, so there the quotient is computed on integers. -#}
{% macro round_ratio(numerator, denominator, scale=2) -%}
    {{ return(adapter.dispatch('round_ratio', 'roundtrip')(numerator, denominator, scale)) }}
{%- endmacro %}

{% macro default__round_ratio(numerator, denominator, scale=2) -%}
    round(cast({{ numerator }} as numeric) / nullif({{ denominator }}, 0), {{ scale }})
{%- endmacro %}

{% macro duckdb__round_ratio(numerator, denominator, scale=2) -%}
    {%- set n -%} cast(({{ numerator }}) * 1000000 as hugeint) {%- endset -%}
    {%- set d -%} cast(nullif({{ denominator }}, 0) * 1000000 as hugeint) {%- endset -%}
    cast(
        sign({{ n }}) * sign({{ d }})
        * ((abs({{ n }}) * {{ 10 ** scale }} * 2 + abs({{ d }})) // (2 * abs({{ d }})))
        as decimal(38, 0)
    ) * cast({{ 1 / (10 ** scale) }} as decimal(38, {{ scale }}))
{%- endmacro %}

{% macro bigquery__round_ratio(numerator, denominator, scale=2) -%}
    round(safe_divide(cast({{ numerator }} as bignumeric), {{ denominator }}), {{ scale }})
{%- endmacro %}

{#- The day before a date. -#}
{% macro previous_day(date_expression) -%}
    {{ return(adapter.dispatch('previous_day', 'roundtrip')(date_expression)) }}
{%- endmacro %}

{% macro default__previous_day(date_expression) -%}
    cast({{ date_expression }} - interval 1 day as date)
{%- endmacro %}

{% macro postgres__previous_day(date_expression) -%}
    ({{ date_expression }} - 1)
{%- endmacro %}

{% macro bigquery__previous_day(date_expression) -%}
    date_sub({{ date_expression }}, interval 1 day)
{%- endmacro %}
