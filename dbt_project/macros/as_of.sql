{#- SQL expression for the reference time: var `as_of` when set, else the latest event time.
    `relation` is the events relation used for the default. -#}
{% macro as_of_ts(relation) -%}
    {%- set as_of = var('as_of', none) -%}
    {%- if as_of is none or (as_of | string | trim) in ('', 'None', 'null') -%}
        (select max(ts) from {{ relation }})
    {%- else -%}
        cast('{{ as_of }}' as {{ dbt.type_timestamp() }})
    {%- endif -%}
{%- endmacro %}
