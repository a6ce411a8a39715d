-- One row per session (identified and anonymous), full history.

with events as (

    select * from {{ ref('fct_events') }}

)

select
    session_id,
    -- A session belongs to one visitor; if a source ever mixes ids, the greatest non-null one wins.
    max(user_id) as user_id,
    max(user_id) is not null as is_identified,
    min(ts) as start_ts,
    max(ts) as end_ts,
    {{ dbt.datediff('min(ts)', 'max(ts)', 'second') }} as duration_seconds,
    count(*) as n_events,
    {{ count_event_types() }},
    count(distinct item_id) as n_items,
    count(case when event_type = 'cart' then 1 end) > 0 as has_cart,
    count(case when event_type = 'purchase' then 1 end) > 0 as has_purchase,
    coalesce(sum(revenue), 0) as revenue

from events
group by session_id
