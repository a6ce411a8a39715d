{#- Fails on rows where the column lies outside [min_value, max_value] (nulls pass; either bound optional). -#}
{% test is_between(model, column_name, min_value=none, max_value=none, inclusive_min=true, inclusive_max=true) %}

select {{ column_name }}
from {{ model }}
where {{ column_name }} is not null
  and (
      false
      {%- if min_value is not none %}
      or {{ column_name }} {{ '<' if inclusive_min else '<=' }} {{ min_value }}
      {%- endif %}
      {%- if max_value is not none %}
      or {{ column_name }} {{ '>' if inclusive_max else '>=' }} {{ max_value }}
      {%- endif %}
  )

{% endtest %}
