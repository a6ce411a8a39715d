{{ config(meta={'dagster': {'ref': {'name': 'fct_user_item_interactions'}}}) }}  {#- Dagster: an asset check on fct_user_item_interactions -#}

-- Every identified item event up to as_of is counted exactly once in fct_user_item_interactions,
-- per event type: the interaction counts add up to the events in fct_events.

with reference as (

    select max(as_of_ts) as as_of_ts from {{ ref('int_events_as_of') }}

),

from_events as (

    select e.event_type, count(*) as n
    from {{ ref('fct_events') }} as e
    cross join reference as r
    where e.user_id is not null
      and e.item_id is not null
      and e.ts <= r.as_of_ts
    group by e.event_type

),

from_interactions as (
    {% for t in event_types() %}
    select '{{ t }}' as event_type, sum(n_{{ t }}) as n from {{ ref('fct_user_item_interactions') }}
    {{ 'union all' if not loop.last }}
    {% endfor %}
)

select
    coalesce(e.event_type, i.event_type) as event_type,
    coalesce(e.n, 0) as n_in_events,
    coalesce(i.n, 0) as n_in_interactions
from from_events as e
full outer join from_interactions as i
    on e.event_type = i.event_type
where coalesce(e.n, 0) <> coalesce(i.n, 0)
