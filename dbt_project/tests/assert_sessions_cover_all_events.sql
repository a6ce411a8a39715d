{{ config(meta={'dagster': {'ref': {'name': 'fct_sessions'}}}) }}  {#- Dagster: an asset check on fct_sessions -#}

-- fct_sessions partitions fct_events: session event counts add up to the number of events,
-- and purchase revenue agrees between the two.

with sessions as (

    select sum(n_events) as n_events, sum(revenue) as revenue from {{ ref('fct_sessions') }}

),

events as (

    select count(*) as n_events, coalesce(sum(revenue), 0) as revenue from {{ ref('fct_events') }}

)

select sessions.n_events as session_events, events.n_events as events, sessions.revenue, events.revenue
from sessions
cross join events
where sessions.n_events <> events.n_events
   or abs(sessions.revenue - events.revenue) > 1e-6 * (1 + abs(events.revenue))
