{#- numerator / denominator as a float; null when the denominator is 0 or null (as dbt_utils.safe_divide). -#}
{% macro safe_divide(numerator, denominator) -%}
    (cast({{ numerator }} as {{ dbt.type_float() }}) / nullif(cast({{ denominator }} as {{ dbt.type_float() }}), 0))
{%- endmacro %}


{#- Fractional days from `start_ts` to `end_ts` (second precision, portable via dbt.datediff). -#}
{% macro days_between(start_ts, end_ts) -%}
    (cast({{ dbt.datediff(start_ts, end_ts, 'second') }} as {{ dbt.type_float() }}) / 86400.0)
{%- endmacro %}
