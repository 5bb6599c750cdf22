{#- Values outside [min_value, max_value] (bounds inclusive unless `exclusive_min`). NULLs pass. -#}
{% test value_between(model, column_name, min_value, max_value, exclusive_min=false) %}
select {{ column_name }}
from {{ model }}
where
    {{ column_name }} {{ '<=' if exclusive_min else '<' }} {{ min_value }}
    or {{ column_name }} > {{ max_value }}
{% endtest %}
