{#- A column of codes joined by ',' (silver's validation_errors) must hold only known codes, each
    once, in the order of `codes`: rebuilding the text from the codes it contains gives it back. -#}
{% test codes_in_order(model, column_name, codes) %}
{%- set contains = [] -%}
{%- for code in codes -%}
    {%- do contains.append((code, "',' || " ~ column_name ~ " || ',' like '%," ~ code ~ ",%'")) -%}
{%- endfor %}
select {{ column_name }}
from {{ model }}
where
    {{ column_name }} is not null
    and {{ column_name }} <> coalesce({{ join_codes(contains) }}, '')
{% endtest %}
