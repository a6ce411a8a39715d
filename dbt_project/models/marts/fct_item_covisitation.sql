-- Grain: item_id x other_item_id (item_id <> other_item_id), over events up to `as_of`.
-- An "actor" is an identified user, or the session of an anonymous visitor. Each actor's events
-- are first reduced to one row per (actor, item) at the first time the actor touched the item;
-- two items co-occur for an actor when those first times are at most `covis_window_hours` apart.
--
--   n_pairs = number of distinct actors in which the pair co-occurs
--   weight  = n_pairs / sqrt(n_actors(item_id) * n_actors(other_item_id))
--             (cosine similarity of the items' actor sets, counting only windowed co-occurrence;
--              symmetric, in (0, 1])
--
-- Pairs with n_pairs < `covis_min_count` are dropped. Both directions are stored, so "items like X"
-- is `where item_id = X order by weight desc` (rank_in_item = 1 is the strongest neighbour).

with events as (

    select * from {{ ref('int_events_as_of') }}
    where item_id is not null

),

actor_items as (

    select
        case
            when user_id is not null then {{ dbt.concat(["'u:'", "user_id"]) }}
            else {{ dbt.concat(["'s:'", "session_id"]) }}
        end as actor_id,
        item_id,
        min(ts) as first_ts

    from events
    group by 1, 2

),

item_actors as (

    select item_id, count(*) as n_actors
    from actor_items
    group by item_id

),

pairs as (

    select
        a.item_id,
        b.item_id as other_item_id,
        count(*) as n_pairs

    from actor_items as a
    inner join actor_items as b
        on a.actor_id = b.actor_id
        and a.item_id <> b.item_id
    where abs({{ dbt.datediff('a.first_ts', 'b.first_ts', 'second') }}) <= {{ var('covis_window_hours') }} * 3600
    group by a.item_id, b.item_id
    having count(*) >= {{ var('covis_min_count') }}

),

scored as (

    select
        pairs.item_id,
        pairs.other_item_id,
        pairs.n_pairs,
        ia.n_actors as n_actors_item,
        ib.n_actors as n_actors_other_item,
        cast(pairs.n_pairs as {{ type_double() }})
            / sqrt(cast(ia.n_actors as {{ type_double() }}) * cast(ib.n_actors as {{ type_double() }})) as weight

    from pairs
    inner join item_actors as ia
        on pairs.item_id = ia.item_id
    inner join item_actors as ib
        on pairs.other_item_id = ib.item_id

)

select
    item_id,
    other_item_id,
    n_pairs,
    n_actors_item,
    n_actors_other_item,
    weight,
    row_number() over (
        partition by item_id order by weight desc, n_pairs desc, other_item_id
    ) as rank_in_item

from scored
