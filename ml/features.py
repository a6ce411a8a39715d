"""The one ordered feature list, used by training, ONNX export and serving alike.

Every feature is a float32 computed from a `Snapshot` (state strictly before the cutoff) for a
(user, candidate item) pair. Missing values use the sentinel -1 (or 9999 days), never NaN, so
LightGBM and the ONNX tree ensemble route them identically. Only numpy here: serving imports it.

| group | features | meaning |
|---|---|---|
| user x item | ui_n_view .. ui_n_purchase | count of each event type on this item |
| | ui_score | event-type-weighted, time-decayed interaction score |
| | ui_days_since_last | days since the last interaction (9999 if never) |
| | ui_in_last_session | the item was touched in the user's latest session |
| candidate sources | is_repeat | the user touched the item before |
| | covis_score, covis_last, covis_rank | co-visitation with the 20 most recent items (recency-weighted) / with the latest one; rank (n_items if none) |
| | emb_sim, emb_rank | cosine(profile vector, item embedding) and its rank over the catalog |
| | pop_rank, n_sources | rank by recent target events; how many of the sources proposed the item |
| item | it_pop_7d/30d/all, it_target_7d | events on the item in the last 7 / 30 days / ever; target events in 7 days |
| | it_cart_rate, it_purchase_rate, it_price, it_age_days, it_trend | carts / purchases per view, price, days since first seen, 7-day vs 30-day rate |
| user | u_n_events, u_n_items, u_n_sessions, u_days_since_last/first, u_n_carts, u_n_purchases, u_avg_price | the user's activity before the cutoff; average price of priced items seen (-1 if none) |
| profile x item | cat_affinity, topcat_affinity, brand_affinity | share of the user's decayed weight on the item's category / top category / brand |
| | price_ratio | item price / the user's average viewed price (-1 if unknown) |
| peer scores | als_score, als_rank, knn_score, knn_rank | ALS (folded-in user vector . item factors) and item-kNN over whole histories; rank n_items when absent |
| reviews (item, user) | it_/u_n_reviews, it_/u_mean_rating, it_/u_mean_sentiment | reviews strictly before the cutoff: count, mean stars, mean text sentiment (ml.reviews; 0 = no reviews) |
"""

from __future__ import annotations

import numpy as np

from ml.candidates import Candidates
from ml.snapshot import ITEM_FEATURES, MISSING, NEVER_DAYS, UI_FEATURES, USER_FEATURES, Snapshot

SOURCE_FEATURES = ["is_repeat", "covis_score", "covis_last", "covis_rank", "emb_sim", "emb_rank", "pop_rank",
                   "n_sources"]
PROFILE_FEATURES = ["cat_affinity", "topcat_affinity", "brand_affinity", "price_ratio"]
PEER_FEATURES = ["als_score", "als_rank", "knn_score", "knn_rank"]
FEATURES: list[str] = UI_FEATURES + SOURCE_FEATURES + ITEM_FEATURES + USER_FEATURES + PROFILE_FEATURES + PEER_FEATURES
FEATURE_GROUPS = {"user_item": UI_FEATURES, "sources": SOURCE_FEATURES, "item": ITEM_FEATURES,
                  "user": USER_FEATURES, "profile": PROFILE_FEATURES,
                  "peer": PEER_FEATURES}


def _rank_of(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rank (0 = best) of every item by score among valid items; invalid items get n_items."""
    n = len(scores)
    ranks = np.full(n, float(n), dtype=np.float32)
    idx = np.flatnonzero(valid)
    order = idx[np.lexsort((idx, -scores[idx]))]
    ranks[order] = np.arange(len(order), dtype=np.float32)
    return ranks


def _affinity(ptr, ids, w, u: int, codes: np.ndarray) -> np.ndarray:
    """The user's weight share for each item's code (0 for unknown codes), via a dense lookup table."""
    s, e = ptr[u], ptr[u + 1]
    size = int(max(codes.max(initial=-1), ids[s:e].max(initial=-1))) + 1
    table = np.zeros(size + 1, dtype=np.float32)  # last slot stays 0: where code -1 lands
    table[ids[s:e]] = w[s:e]
    return table[np.where(codes >= 0, codes, size)]


def build_features(snap: Snapshot, u: int, cand: Candidates) -> np.ndarray:
    """Feature matrix (len(cand.items), len(FEATURES)) for a known user's candidates."""
    items = cand.items
    n = len(items)
    out = np.empty((n, len(FEATURES)), dtype=np.float32)
    col = 0

    hist_items, hist_feat = snap.history(u)
    ui = np.zeros((snap.n_items, len(UI_FEATURES)), dtype=np.float32)
    ui[:, UI_FEATURES.index("ui_days_since_last")] = NEVER_DAYS
    ui[hist_items] = hist_feat
    out[:, col:col + len(UI_FEATURES)] = ui[items]
    col += len(UI_FEATURES)

    s = cand.scores
    covis_rank = _rank_of(s.covis, s.covis > 0)
    emb_rank = _rank_of(s.emb, np.ones(snap.n_items, dtype=bool))
    out[:, col + 0] = (~np.isnan(s.repeat[items])).astype(np.float32)
    out[:, col + 1] = s.covis[items]
    out[:, col + 2] = s.covis_last[items]
    out[:, col + 3] = covis_rank[items]
    out[:, col + 4] = s.emb[items]
    out[:, col + 5] = emb_rank[items]
    out[:, col + 6] = snap.pop_rank[items]
    out[:, col + 7] = cand.sources.sum(axis=1)
    col += len(SOURCE_FEATURES)

    out[:, col:col + len(ITEM_FEATURES)] = snap.item_feat[items]
    col += len(ITEM_FEATURES)
    out[:, col:col + len(USER_FEATURES)] = snap.user_feat[u]
    col += len(USER_FEATURES)

    out[:, col + 0] = _affinity(snap.cat_ptr, snap.cat_id, snap.cat_w, u, snap.item_cat[items])
    out[:, col + 1] = _affinity(snap.top_ptr, snap.top_id, snap.top_w, u, snap.item_top[items])
    out[:, col + 2] = _affinity(snap.brand_ptr, snap.brand_id, snap.brand_w, u, snap.item_brand[items])
    price = snap.item_feat[items, ITEM_FEATURES.index("it_price")]
    avg = snap.user_feat[u, USER_FEATURES.index("u_avg_price")]
    out[:, col + 3] = np.where((price > 0) & (avg > 0), price / max(avg, 1e-9), MISSING)
    col += len(PROFILE_FEATURES)

    out[:, col + 0] = s.als[items]
    out[:, col + 1] = _rank_of(s.als, np.ones(snap.n_items, dtype=bool) if np.any(s.als) else s.als > 0)[items]
    out[:, col + 2] = s.knn[items]
    out[:, col + 3] = _rank_of(s.knn, s.knn > 0)[items]
    col += len(PEER_FEATURES)
    assert col == len(FEATURES)
    return out

