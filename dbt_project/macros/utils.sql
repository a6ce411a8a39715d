{#- numerator / denominator as a float; null when the denominator is 0 or null (as dbt_utils.safe_divide). -#}
{% macro safe_divide(numerator, denominator) -%}
    (cast({{ numerator }} as {{ type_double() }}) / nullif(cast({{ denominator }} as {{ type_double() }}), 0))
{%- endmacro %}


{#- Fractional days from `start_ts` to `end_ts` (second precision, portable via dbt.datediff). -#}
{% macro days_between(start_ts, end_ts) -%}
    (cast({{ dbt.datediff(start_ts, end_ts, 'second') }} as {{ type_double() }}) / 86400.0)
{%- endmacro %}


{#- 64-bit float type. dbt.type_float() is 32-bit REAL on DuckDB, too coarse for prices and sums. -#}
{% macro type_double() -%}
    {{ return(adapter.dispatch('type_double', 'persona')()) }}
{%- endmacro %}

{% macro default__type_double() -%}double{%- endmacro %}
{% macro postgres__type_double() -%}double precision{%- endmacro %}
{% macro redshift__type_double() -%}double precision{%- endmacro %}
{% macro bigquery__type_double() -%}float64{%- endmacro %}
