-- One row per event (full history, not limited by `as_of`), as it happened.
--
-- Catalogue attributes are not copied in: they live in dim_items (join on item_id). A catalogue changes
-- with every file (on the embedded GA log a new day's file renames or re-categorises ~100 of 378 items,
-- the popular ones), so copying them made each new day rewrite about half of history.
--
-- Incremental (delete+insert on event_id): a run writes only the events that are new or whose row would
-- come out different (a source file reloaded with other content). Every column except `loaded_at` is
-- compared, which keeps the table equal to a full rebuild. `loaded_at` (this run's start) tells
-- fct_sessions which sessions to recompute. Raw rows that disappear, or change a column fct_sessions reads
-- (an event moving to another session would leave the old one stale), need `--full-refresh`; the Dagster
-- dbt asset detects both cases and adds the flag itself (orchestration/assets/dbt.py).
{{ config(materialized='incremental', unique_key='event_id', incremental_strategy='delete+insert',
          on_schema_change='fail') }}

{%- set compared = ['user_id', 'session_id', 'is_identified', 'ts', 'event_date', 'event_type', 'item_id',
                    'query', 'quantity', 'price', 'revenue', 'rating', 'review_text', 'source', 'source_file',
                    'source_row'] %}

with events as (

    select
        event_id,
        user_id,
        session_id,
        is_identified,
        ts,
        event_date,
        event_type,
        item_id,
        query,
        quantity,
        price,
        case
            when event_type = 'purchase' then price * coalesce(quantity, 1)
        end as revenue,
        rating,
        review_text,
        source,
        source_file,
        source_row

    from {{ ref('stg_events') }}

)

select
    events.*,
    cast('{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S.%f") }}' as {{ dbt.type_timestamp() }}) as loaded_at

from events
{% if is_incremental() %}
where not exists (
    select 1
    from {{ this }} as existing
    where existing.event_id = events.event_id
    {%- for c in compared %}
      and existing.{{ c }} is not distinct from events.{{ c }}
    {%- endfor %}
)
{% endif %}
