-- The events the feature marts see: everything up to the reference time `as_of`
-- (var, default = latest event), with each event's age and configured weight.
-- Filtering here is what makes dim_users / dim_items / interactions / covisitation point-in-time.

with events as (

    select * from {{ ref('stg_events') }}

),

reference as (

    select {{ as_of_ts(ref('stg_events')) }} as as_of_ts

)

select
    events.*,
    reference.as_of_ts,
    {{ days_between('events.ts', 'reference.as_of_ts') }} as age_days,
    {{ event_weight('events.event_type') }} as event_weight

from events
cross join reference
where events.ts <= reference.as_of_ts
