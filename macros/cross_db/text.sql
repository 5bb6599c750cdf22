{#- Text: rule codes, byte-wise ordering, URL encoding and JSON documents. -#}

{#- Failed rule codes joined by ',' in the order given; NULL when none failed.
    `conditions` is a list of (code, SQL condition) pairs. -#}
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

{#- `text` matches the regular expression `pattern` (a Python-style string without quotes). -#}
{% macro matches_pattern(text, pattern) -%}
    {{ return(adapter.dispatch('matches_pattern', 'roundtrip')(text, pattern)) }}
{%- endmacro %}

{% macro default__matches_pattern(text, pattern) -%}
    regexp_matches({{ text }}, '{{ pattern }}')
{%- endmacro %}

{% macro postgres__matches_pattern(text, pattern) -%}
    ({{ text }} ~ '{{ pattern }}')
{%- endmacro %}

{% macro bigquery__matches_pattern(text, pattern) -%}
    regexp_contains({{ text }}, r'{{ pattern }}')
{%- endmacro %}

{#- Text compared byte by byte (UTF-8), whatever the database's collation: the duplicate
    tie-break must order text the same way on every engine (and in Spark). -#}
{% macro bytewise(expression) -%}
    {{ return(adapter.dispatch('bytewise', 'roundtrip')(expression)) }}
{%- endmacro %}

{% macro default__bytewise(expression) -%}
    {{ expression }}
{%- endmacro %}

{% macro postgres__bytewise(expression) -%}
    ({{ expression }} collate "C")
{%- endmacro %}

{#- RFC 3986 percent-encoding of UTF-8 text for a URL's query value: letters, digits and
    `-._~` stay, every other byte becomes %XX (upper-case hex). NULL stays NULL. -#}
{% macro url_encode(text) -%}
    {{ return(adapter.dispatch('url_encode', 'roundtrip')(text)) }}
{%- endmacro %}

{% macro default__url_encode(text) -%}
    url_encode({{ text }})
{%- endmacro %}

{% macro postgres__url_encode(text) -%}
    case when {{ text }} is not null then coalesce((
        select string_agg(
            case
                when url_chars.url_char ~ '^[A-Za-z0-9._~-]$' then url_chars.url_char
                else upper(regexp_replace(encode(convert_to(url_chars.url_char, 'UTF8'), 'hex'), '(..)', '%\1', 'g'))
            end,
            '' order by url_chars.position
        )
        from regexp_split_to_table({{ text }}, '') with ordinality as url_chars (url_char, position)
    ), '') end
{%- endmacro %}

{#- BigQuery: each character's UTF-8 bytes, computed from its code point (a cast of the text to
    BYTES would do, but the BigQuery emulator cannot cast non-ASCII text to BYTES). -#}
{% macro bigquery__url_encode(text) -%}
    case when {{ text }} is not null then coalesce((
        select string_agg(
            if(
                regexp_contains(url_char, r'^[A-Za-z0-9._~-]$'),
                url_char,
                (
                    select string_agg(format('%%%02X', url_byte), '' order by byte_position)
                    from unnest(case
                        when code_point < 128 then [code_point]
                        when code_point < 2048 then [192 + div(code_point, 64), 128 + mod(code_point, 64)]
                        when code_point < 65536 then [
                            224 + div(code_point, 4096), 128 + mod(div(code_point, 64), 64), 128 + mod(code_point, 64)]
                        else [
                            240 + div(code_point, 262144), 128 + mod(div(code_point, 4096), 64),
                            128 + mod(div(code_point, 64), 64), 128 + mod(code_point, 64)]
                    end) as url_byte with offset as byte_position
                )
            ),
            '' order by char_position
        )
        from unnest(split({{ text }}, '')) as url_char with offset as char_position,
            unnest(to_code_points(url_char)) as code_point
        {#- split('', '') is [''], one empty string #}
        where url_char != ''
    ), '') end
{%- endmacro %}

{#- A JSON string literal for a text value (quotes and escapes included); `null` for NULL. -#}
{% macro json_string(text) -%}
    {{ return(adapter.dispatch('json_string', 'roundtrip')(text)) }}
{%- endmacro %}

{% macro default__json_string(text) -%}
    coalesce(cast(to_json(cast({{ text }} as varchar)) as varchar), 'null')
{%- endmacro %}

{% macro postgres__json_string(text) -%}
    coalesce(to_json(cast({{ text }} as text))::text, 'null')
{%- endmacro %}

{% macro bigquery__json_string(text) -%}
    coalesce(to_json_string(cast({{ text }} as string)), 'null')
{%- endmacro %}

{#- A compact JSON object, keys in the order given: `{"key":value,...}`. `fields` is a list of
    (key, SQL expression, kind) with kind 'text' (a JSON string) or 'integer' (a JSON number).
    Built as text so that every engine writes the very same bytes. -#}
{% macro json_object_text(fields) -%}
    '{'
    {%- for key, expression, kind in fields %}
    || '{{ "," if not loop.first }}"{{ key }}":' ||
    {%- if kind == 'integer' %} coalesce(cast({{ expression }} as {{ dbt.type_string() }}), 'null')
    {%- else %} {{ json_string(expression) }}
    {%- endif %}
    {%- endfor %}
    || '}'
{%- endmacro %}

{#- A deterministic key: md5 (hex) of the values joined by '|', NULL written as ''. -#}
{% macro surrogate_key(expressions) -%}
    {%- set parts = [] -%}
    {%- for expression in expressions -%}
        {%- do parts.append("coalesce(cast(" ~ expression ~ " as " ~ dbt.type_string() ~ "), '')") -%}
        {%- if not loop.last %}{% do parts.append("'|'") %}{% endif -%}
    {%- endfor -%}
    {{ dbt.hash(dbt.concat(parts)) }}
{%- endmacro %}
