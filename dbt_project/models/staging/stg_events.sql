-- One row per raw event: types made explicit, strings trimmed, event_type lower-cased.
-- Nothing is filtered: the adapters already quarantined rows that break the contract.

with source as (

    select * from {{ source('raw', 'raw_events') }}

),

renamed as (

    select
        cast(event_id as {{ dbt.type_string() }}) as event_id,
        cast(nullif(trim(user_id), '') as {{ dbt.type_string() }}) as user_id,
        cast(nullif(trim(session_id), '') as {{ dbt.type_string() }}) as source_session_id,
        cast(ts as {{ dbt.type_timestamp() }}) as ts,
        lower(trim(event_type)) as event_type,
        cast(nullif(trim(item_id), '') as {{ dbt.type_string() }}) as item_id,
        cast(nullif(trim(query), '') as {{ dbt.type_string() }}) as query,
        cast(quantity as {{ type_double() }}) as quantity,
        cast(price as {{ type_double() }}) as price,
        cast(rating as {{ type_double() }}) as rating,
        cast(review_text as {{ dbt.type_string() }}) as review_text,
        cast(source as {{ dbt.type_string() }}) as source,
        cast(source_file as {{ dbt.type_string() }}) as source_file,
        cast(source_row as {{ dbt.type_bigint() }}) as source_row

    from source

)

select
    event_id,
    user_id,
    -- Sources without sessions get one session per user (or anonymous) and UTC day.
    coalesce(
        source_session_id,
        {{ dbt.concat(["'nosession:'", "coalesce(user_id, 'anonymous')", "':'", "cast(cast(ts as date) as " ~ dbt.type_string() ~ ")"]) }}
    ) as session_id,
    source_session_id,
    user_id is not null as is_identified,
    ts,
    cast(ts as date) as event_date,
    event_type,
    item_id,
    query,
    quantity,
    price,
    rating,
    review_text,
    source,
    source_file,
    source_row

from renamed
