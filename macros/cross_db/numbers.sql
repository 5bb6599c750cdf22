{#- Numbers: safe casts from text and exact rounding. -#}

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
