-- Grain: identified user x item, over events up to `as_of`.
-- weighted_score = sum over the pair's events of event_weight * 0.5 ^ (age_days / half_life_days),
-- i.e. an exponentially time-decayed, type-weighted interaction strength (the implicit-feedback
-- "rating" for collaborative filtering). Negative for pairs dominated by removals/returns.

with events as (

    select * from {{ ref('int_events_as_of') }}
    where user_id is not null
      and item_id is not null

)

select
    user_id,
    item_id,
    count(*) as n_events,
    {{ count_event_types() }},
    min(ts) as first_ts,
    max(ts) as last_ts,
    sum(
        event_weight * power(0.5, age_days / cast({{ var('half_life_days') }} as {{ type_double() }}))
    ) as weighted_score,
    max(as_of_ts) as as_of_ts

from events
group by user_id, item_id
