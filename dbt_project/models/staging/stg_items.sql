-- One row per catalogue item: strings trimmed (empty -> null), top two category levels split out.

with source as (

    select * from {{ source('raw', 'raw_items') }}

),

renamed as (

    select
        cast(trim(item_id) as {{ dbt.type_string() }}) as item_id,
        cast(nullif(trim(title), '') as {{ dbt.type_string() }}) as title,
        cast(nullif(trim(description), '') as {{ dbt.type_string() }}) as description,
        cast(nullif(trim(category_path), '') as {{ dbt.type_string() }}) as category_path,
        cast(nullif(trim(brand), '') as {{ dbt.type_string() }}) as brand,
        cast(price as {{ type_double() }}) as price,
        cast(nullif(trim(image_url), '') as {{ dbt.type_string() }}) as image_url

    from source

)

select
    item_id,
    title,
    description,
    category_path,
    nullif({{ dbt.split_part('category_path', "'/'", 1) }}, '') as category_l1,
    nullif({{ dbt.split_part('category_path', "'/'", 2) }}, '') as category_l2,
    brand,
    price,
    image_url

from renamed
