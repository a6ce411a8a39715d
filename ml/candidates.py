"""Candidate generation from four sources, shared by training, evaluation and serving.

For a known user: their own past items (repeat), items co-visited with their recent items,
items nearest their profile vector, and popular items. The union is what the ranker scores.
Scores are kept dense over the catalog so features can read them without recomputation.
Only numpy here: serving imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.snapshot import Snapshot

SOURCES = ("repeat", "covisitation", "embedding", "popularity")
RECENT_ITEMS = 20


@dataclass
class UserScores:
    """Dense per-item signals for one user (length n_items)."""

    repeat: np.ndarray       # decayed interaction score, NaN where never interacted
    covis: np.ndarray        # co-visitation with the recent history, recency-weighted
    covis_last: np.ndarray   # co-visitation with the single most recent item
    emb: np.ndarray          # cosine(profile vector, item embedding)


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
    return UserScores(repeat, covis, covis_last, emb.astype(np.float32))


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
    ]
    flags = np.zeros((snap.n_items, len(SOURCES)), dtype=bool)
    for j, p in enumerate(picks):
        flags[p, j] = True
    items = np.flatnonzero(flags.any(axis=1)).astype(np.int32)
    return Candidates(items, flags[items], s)
