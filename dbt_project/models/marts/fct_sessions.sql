-- One row per session (identified and anonymous), full history.
--
-- Incremental (delete+insert on session_id): a run recomputes, from all of their events, only the
-- sessions that received events fct_events wrote after this table's last load (`loaded_at`
-- watermark). A session spanning the boundary between two loads is therefore rebuilt whole and
-- comes out as a full rebuild would.
{{ config(materialized='incremental', unique_key='session_id', incremental_strategy='delete+insert',
          on_schema_change='fail') }}

with events as (

    select * from {{ ref('fct_events') }}
    {% if is_incremental() %}
    where session_id in (
        select session_id
        from {{ ref('fct_events') }}
        where loaded_at > (
            select coalesce(max(loaded_at), cast('1900-01-01' as {{ dbt.type_timestamp() }})) from {{ this }}
        )
    )
    {% endif %}

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
    coalesce(sum(revenue), 0) as revenue,
    max(loaded_at) as loaded_at

from events
group by session_id
