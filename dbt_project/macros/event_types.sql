{#- The canonical event types, in the order of data_contracts.schema.EVENT_TYPES.
    Models generate one n_<type> column per entry, so the marts' columns follow the contract. -#}
{% macro event_types() -%}
    {{ return(['search', 'view', 'click', 'cart', 'remove_from_cart', 'checkout', 'purchase', 'return', 'review']) }}
{%- endmacro %}


{#- SQL expression: the configured weight (var `event_weights`) of the event type in `column`. -#}
{% macro event_weight(column) -%}
    {%- set weights = var('event_weights') -%}
    {%- set missing = [] -%}
    {%- for t in event_types() if t not in weights -%}{% do missing.append(t) %}{%- endfor -%}
    {%- if missing -%}
        {{ exceptions.raise_compiler_error("var event_weights lacks event type(s) " ~ missing ~ "; list all of " ~ event_types()) }}
    {%- endif -%}
    case {{ column }}
    {%- for t in event_types() %}
        when '{{ t }}' then cast({{ weights[t] }} as {{ type_double() }})
    {%- endfor %}
        else cast(0 as {{ type_double() }})
    end
{%- endmacro %}


{#- One `count(case ...) as n_<type>` (bigint) column per canonical event type (prefix: column name prefix). -#}
{% macro count_event_types(column='event_type', prefix='n_') -%}
    {%- for t in event_types() %}
    count(case when {{ column }} = '{{ t }}' then 1 end) as {{ prefix }}{{ t }}{{ "," if not loop.last }}
    {%- endfor %}
{%- endmacro %}
