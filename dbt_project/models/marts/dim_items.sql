-- One row per item: the catalogue (stg_items) plus any item seen only in events, with
-- popularity and funnel statistics over all events up to `as_of` (identified and anonymous).
--
-- Funnel rates are session-based, so they are proportions in [0, 1]:
--   view_to_cart_rate     = sessions that viewed and carted the item / sessions that viewed it
--   cart_to_purchase_rate = sessions that carted and purchased it   / sessions that carted it
--   view_to_purchase_rate = sessions that viewed and purchased it   / sessions that viewed it
-- A rate is null when its denominator is 0.

with items as (

    select * from {{ ref('stg_items') }}

),

events as (

    select * from {{ ref('int_events_as_of') }}
    where item_id is not null

),

reference as (

    select {{ as_of_ts(ref('stg_events')) }} as as_of_ts

),

all_items as (

    select item_id, true as in_catalog from items
    union all
    select distinct item_id, false as in_catalog from events
    where item_id not in (select item_id from items)

),

item_stats as (

    select
        item_id,
        count(*) as popularity_all_time,
        count(case when ts > {{ dbt.dateadd('day', -7, 'as_of_ts') }} then 1 end) as popularity_7d,
        count(case when ts > {{ dbt.dateadd('day', -30, 'as_of_ts') }} then 1 end) as popularity_30d,
        count(distinct user_id) as n_users,
        count(distinct session_id) as n_sessions,
        count(case when event_type = 'view' then 1 end) as n_views,
        count(case when event_type = 'click' then 1 end) as n_clicks,
        count(case when event_type = 'cart' then 1 end) as n_carts,
        count(case when event_type = 'purchase' then 1 end) as n_purchases,
        coalesce(sum(case when event_type = 'purchase' then price * coalesce(quantity, 1) end), 0) as revenue,
        min(ts) as first_ts,
        max(ts) as last_ts

    from events
    group by item_id

),

item_sessions as (

    select
        item_id,
        session_id,
        max(case when event_type = 'view' then 1 else 0 end) as viewed,
        max(case when event_type = 'cart' then 1 else 0 end) as carted,
        max(case when event_type = 'purchase' then 1 else 0 end) as purchased

    from events
    group by item_id, session_id

),

funnel as (

    select
        item_id,
        count(case when viewed = 1 then 1 end) as n_view_sessions,
        count(case when carted = 1 then 1 end) as n_cart_sessions,
        count(case when purchased = 1 then 1 end) as n_purchase_sessions,
        count(case when viewed = 1 and carted = 1 then 1 end) as n_view_cart_sessions,
        count(case when carted = 1 and purchased = 1 then 1 end) as n_cart_purchase_sessions,
        count(case when viewed = 1 and purchased = 1 then 1 end) as n_view_purchase_sessions

    from item_sessions
    group by item_id

)

select
    all_items.item_id,
    all_items.in_catalog,
    items.title,
    items.description,
    items.category_path,
    items.category_l1,
    items.category_l2,
    items.brand,
    items.price,
    items.image_url,
    coalesce(item_stats.popularity_7d, 0) as popularity_7d,
    coalesce(item_stats.popularity_30d, 0) as popularity_30d,
    coalesce(item_stats.popularity_all_time, 0) as popularity_all_time,
    coalesce(item_stats.n_users, 0) as n_users,
    coalesce(item_stats.n_sessions, 0) as n_sessions,
    coalesce(item_stats.n_views, 0) as n_views,
    coalesce(item_stats.n_clicks, 0) as n_clicks,
    coalesce(item_stats.n_carts, 0) as n_carts,
    coalesce(item_stats.n_purchases, 0) as n_purchases,
    coalesce(item_stats.revenue, 0) as revenue,
    coalesce(funnel.n_view_sessions, 0) as n_view_sessions,
    coalesce(funnel.n_cart_sessions, 0) as n_cart_sessions,
    coalesce(funnel.n_purchase_sessions, 0) as n_purchase_sessions,
    {{ safe_divide('funnel.n_view_cart_sessions', 'funnel.n_view_sessions') }} as view_to_cart_rate,
    {{ safe_divide('funnel.n_cart_purchase_sessions', 'funnel.n_cart_sessions') }} as cart_to_purchase_rate,
    {{ safe_divide('funnel.n_view_purchase_sessions', 'funnel.n_view_sessions') }} as view_to_purchase_rate,
    item_stats.first_ts,
    item_stats.last_ts,
    reference.as_of_ts

from all_items
cross join reference
left join items
    on all_items.item_id = items.item_id
left join item_stats
    on all_items.item_id = item_stats.item_id
left join funnel
    on all_items.item_id = funnel.item_id
