{{ config(meta={'dagster': {'ref': {'name': 'dim_users'}}}) }}  {#- Dagster: an asset check on dim_users -#}

-- dim_users has exactly one row per identified user with events up to as_of.

with expected as (

    select count(distinct user_id) as n from {{ ref('int_events_as_of') }} where user_id is not null

),

actual as (

    select count(*) as n from {{ ref('dim_users') }}

)

select expected.n as expected_users, actual.n as dim_users_rows
from expected
cross join actual
where expected.n <> actual.n
