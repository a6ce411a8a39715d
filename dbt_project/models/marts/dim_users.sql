-- One row per identified user with events up to `as_of`: activity and RFM features.

with events as (

    select * from {{ ref('int_events_as_of') }}
    where user_id is not null

)

select
    user_id,
    min(ts) as first_ts,
    max(ts) as last_ts,
    count(*) as n_events,
    count(distinct session_id) as n_sessions,
    count(distinct item_id) as n_items,
    count(distinct event_date) as active_days,
    {{ days_between('max(ts)', 'max(as_of_ts)') }} as recency_days,
    count(distinct case when event_type = 'purchase' then session_id end) as frequency,
    coalesce(sum(case when event_type = 'purchase' then price * coalesce(quantity, 1) end), 0) as monetary,
    count(case when event_type = 'cart' then 1 end) as n_carts,
    count(case when event_type = 'purchase' then 1 end) as n_purchases,
    max(as_of_ts) as as_of_ts

from events
group by user_id
