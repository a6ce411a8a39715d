-- One row per event (full history, not limited by `as_of`), with the item's catalogue attributes.

with events as (

    select * from {{ ref('stg_events') }}

),

items as (

    select * from {{ ref('stg_items') }}

)

select
    events.event_id,
    events.user_id,
    events.session_id,
    events.is_identified,
    events.ts,
    events.event_date,
    events.event_type,
    events.item_id,
    events.query,
    events.quantity,
    events.price,
    case
        when events.event_type = 'purchase' then events.price * coalesce(events.quantity, 1)
    end as revenue,
    events.rating,
    events.review_text,
    items.title as item_title,
    items.category_path as item_category_path,
    items.category_l1 as item_category_l1,
    items.category_l2 as item_category_l2,
    items.brand as item_brand,
    items.price as item_price,
    events.source,
    events.source_file,
    events.source_row

from events
left join items
    on events.item_id = items.item_id
