-- fct_item_covisitation stores both directions of every pair with the same n_pairs and weight.
-- Fails on any (a, b) whose mirror (b, a) is missing or differs.

select a.item_id, a.other_item_id, a.n_pairs, b.n_pairs as mirror_n_pairs, a.weight, b.weight as mirror_weight
from {{ ref('fct_item_covisitation') }} as a
left join {{ ref('fct_item_covisitation') }} as b
    on a.item_id = b.other_item_id
    and a.other_item_id = b.item_id
where b.item_id is null
   or a.n_pairs <> b.n_pairs
   or abs(a.weight - b.weight) > 1e-9
