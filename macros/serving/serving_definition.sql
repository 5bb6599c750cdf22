{#- Shared with tests/fixtures/retl_project (its macro-paths include this folder): what the
    serving materializations write into a view's comment, and read back. -#}

{#- The comment of a relation (Postgres), '' when none. -#}
{% macro relation_comment(relation) %}
    {% set query %}
        select coalesce(obj_description(to_regclass('{{ relation }}'), 'pg_class'), '') as comment
    {% endset %}
    {{ return(run_query(query).columns[0].values()[0]) }}
{% endmacro %}


{#- What a serving model's view is built from, as one hash that every manifest of the project
    holds whatever its target: the model file's checksum, its unique key and the relations it
    reads (schema.identifier, without the database, which differs between targets). reverse_etl
    computes the same from its DuckDB manifest (reverse_etl/spec.py, `serving_definition`): the
    two must stay identical. -#}
{% macro serving_definition(node, key_columns) %}
    {%- set parents = [] -%}
    {%- for uid in node.depends_on.nodes | sort -%}
        {%- if uid.startswith('source.') -%}
            {%- set parent = graph.sources[uid] -%}
            {%- do parents.append(uid ~ '=' ~ parent.schema ~ '.' ~ parent.identifier) -%}
        {%- else -%}
            {%- set parent = graph.nodes[uid] -%}
            {%- do parents.append(uid ~ '=' ~ parent.schema ~ '.' ~ parent.alias) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(local_md5(node.checksum.checksum ~ '|' ~ key_columns | join(',') ~ '|' ~ parents | join(','))) }}
{% endmacro %}
