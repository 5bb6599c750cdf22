{#- IRIS codes are 9 characters that start with their 5-character commune code, which starts
    with the department code: kept as text, `2A004` or `06088` survive intact. -#}
{% test iris_code_in_commune(model) %}
select iris_code, commune_code, department_code
from {{ model }}
where
    length(iris_code) <> 9
    or length(commune_code) <> 5
    or substr(iris_code, 1, 5) <> commune_code
    or substr(commune_code, 1, length(department_code)) <> department_code
{% endtest %}
