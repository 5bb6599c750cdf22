{#- Numbers: safe casts from text and exact rounding. -#}

{#- Safe casts: NULL instead of an error when the text does not fit the type. -#}
{% macro cast_or_null(expression, type) -%}
    {{ return(adapter.dispatch('cast_or_null', 'roundtrip')(expression, type)) }}
{%- endmacro %}

{% macro default__cast_or_null(expression, type) -%}
    try_cast({{ expression }} as {{ type }})
{%- endmacro %}

{% macro bigquery__cast_or_null(expression, type) -%}
    safe_cast({{ expression }} as {{ type }})
{%- endmacro %}

{#- PostgreSQL 16+ validates input without raising (the project's server is 18). -#}
{% macro postgres__cast_or_null(expression, type) -%}
    case when pg_input_is_valid({{ expression }}, '{{ type }}') then cast({{ expression }} as {{ type }}) end
{%- endmacro %}

{#- Numbers from bronze text. Only plain decimal notation parses (an optional sign, digits, for
    decimals an optional fraction), so that every engine (and Spark) agrees: DuckDB would round
    '1.5' into an integer and trim ' 7', Postgres would accept '1e3'. A value out of the type's
    range is NULL too; a decimal with more places is rounded half away from zero. -#}
{% macro parse_integer(text, type='bigint') -%}
    case when {{ matches_pattern(text, '^[+-]?[0-9]+$') }} then {{ cast_or_null(text, type) }} end
{%- endmacro %}

{% macro parse_decimal(text, type) -%}
    case when {{ matches_pattern(text, '^[+-]?[0-9]+([.][0-9]+)?$') }} then {{ cast_or_null(text, type) }} end
{%- endmacro %}

{#- round(numerator / denominator, scale), exact and half away from zero on every engine; NULL
    when the denominator is 0 or NULL. DuckDB divides decimals in DOUBLE, so there the quotient
    is computed on integers (both sides scaled by 10^6: inputs have at most 6 decimals). -#}
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
    ) * cast({{ ('%.' ~ scale ~ 'f') | format(1 / 10 ** scale) }} as decimal(38, {{ scale }}))
{%- endmacro %}

{% macro bigquery__round_ratio(numerator, denominator, scale=2) -%}
    round(safe_divide(cast({{ numerator }} as bignumeric), {{ denominator }}), {{ scale }})
{%- endmacro %}

{#- A 64-bit float type (dbt.type_float() is 32-bit on DuckDB). -#}
{% macro type_double() -%}
    {{ return(adapter.dispatch('type_double', 'roundtrip')()) }}
{%- endmacro %}

{% macro default__type_double() -%}
    double precision
{%- endmacro %}

{% macro bigquery__type_double() -%}
    float64
{%- endmacro %}
