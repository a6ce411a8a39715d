"""Candidate generation from six sources, shared by training, evaluation and serving.

For a known user: their own past items (repeat), items co-visited with their recent items,
items nearest their profile vector, popular items, the top of an ALS model (user vector folded in
from the history against the snapshot's item factors) and item-kNN neighbours of their whole
history. The union is what the ranker scores.
Scores are kept dense over the catalog so features can read them without recomputation.
Only numpy here: serving imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.snapshot import Snapshot

SOURCES = ("repeat", "covisitation", "embedding", "popularity", "als", "itemknn")
RECENT_ITEMS = 20


@dataclass
class UserScores:
    """Dense per-item signals for one user (length n_items)."""

    repeat: np.ndarray       # decayed interaction score, NaN where never interacted
    covis: np.ndarray        # co-visitation with the recent history, recency-weighted
    covis_last: np.ndarray   # co-visitation with the single most recent item
    emb: np.ndarray          # cosine(profile vector, item embedding)
    als: np.ndarray          # ALS score (folded-in user vector . item factors); zeros without factors
    knn: np.ndarray          # item-kNN score: sum of neighbour weights over the whole history


@dataclass
class Candidates:
    items: np.ndarray        # int32 item indices
    sources: np.ndarray      # bool (n, len(SOURCES))
    scores: UserScores | None


def user_scores(snap: Snapshot, u: int) -> UserScores:
    n = snap.n_items
    hist_items, hist_feat = snap.history(u)
    repeat = np.full(n, np.nan, dtype=np.float32)
    repeat[hist_items] = hist_feat[:, 6]  # ui_score
    covis = np.zeros(n, dtype=np.float32)
    covis_last = np.zeros(n, dtype=np.float32)
    for rank, i in enumerate(hist_items[:RECENT_ITEMS]):  # history is sorted most recent first
        nb, w = snap.neighbors(int(i))
        covis[nb] += w / (1.0 + rank)
        if rank == 0:
            covis_last[nb] = w
    emb = snap.item_emb @ snap.user_vec[u]
    als = np.zeros(n, dtype=np.float32)
    if snap.als_item.shape[0] == n and len(hist_items):
        als = (snap.als_item @ als_user_vector(snap, hist_items, hist_feat[:, 6])).astype(np.float32)
    knn = _spread(snap.knn_ptr, snap.knn_idx, snap.knn_w, hist_items, n)
    return UserScores(repeat, covis, covis_last, emb.astype(np.float32), als, knn)


def als_user_vector(snap: Snapshot, items: np.ndarray, ui_score: np.ndarray) -> np.ndarray:
    """The implicit-ALS user step for one user: (YtY + reg I + sum (c-1) y y^T) x = sum c y.

    Confidence c = alpha * (max(score, 0) + 1), exactly the matrix the item factors were fitted on,
    so a training user gets (up to the solver) their fitted vector and a new or updated user a
    consistent one. numpy only.
    """
    Y = snap.als_item[items].astype(np.float64)
    c = float(snap.als_alpha[0]) * (np.clip(ui_score, 0, None).astype(np.float64) + 1.0)
    A = snap.als_gram.astype(np.float64) + (Y * (c - 1.0)[:, None]).T @ Y
    return np.linalg.solve(A, Y.T @ c)


def _spread(ptr: np.ndarray, idx: np.ndarray, w: np.ndarray, items: np.ndarray, n: int) -> np.ndarray:
    """Sum of neighbour weights over `items` (CSR neighbour lists), vectorised."""
    items = items[items + 1 < len(ptr)]
    starts, ends = ptr[items], ptr[items + 1]
    lens = ends - starts
    if lens.sum() == 0:
        return np.zeros(n, dtype=np.float32)
    pos = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
    return np.bincount(idx[pos], weights=w[pos], minlength=n).astype(np.float32)


def _top(scores: np.ndarray, k: int, valid: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(valid)
    if len(idx) == 0 or k <= 0:
        return idx[:0]
    order = np.lexsort((idx, -scores[idx]))  # score desc, ties by index: deterministic
    return idx[order[:k]]


def generate(snap: Snapshot, u: int | None, per_source: dict[str, int]) -> Candidates:
    """Union of the sources' top items; unknown users (u is None) get popularity only."""
    n_pop = int(per_source.get("popularity", 50))
    pop = snap.pop_order[:n_pop]
    if u is None:
        sources = np.zeros((len(pop), len(SOURCES)), dtype=bool)
        sources[:, 3] = True
        return Candidates(pop.astype(np.int32), sources, None)
    s = user_scores(snap, u)
    picks = [
        _top(np.nan_to_num(s.repeat, nan=-np.inf), int(per_source.get("repeat", 50)), ~np.isnan(s.repeat)),
        _top(s.covis, int(per_source.get("covisitation", 50)), s.covis > 0),
        _top(s.emb, int(per_source.get("embedding", 50)), np.ones(snap.n_items, dtype=bool)
             if np.any(snap.user_vec[u]) else np.zeros(snap.n_items, dtype=bool)),
        pop,
        _top(s.als, int(per_source.get("als", 0)),
             np.ones(snap.n_items, dtype=bool) if np.any(s.als) else np.zeros(snap.n_items, dtype=bool)),
        _top(s.knn, int(per_source.get("itemknn", 0)), s.knn > 0),
    ]
    flags = np.zeros((snap.n_items, len(SOURCES)), dtype=bool)
    for j, p in enumerate(picks):
        flags[p, j] = True
    items = np.flatnonzero(flags.any(axis=1)).astype(np.int32)
    return Candidates(items, flags[items], s)
