"""Peer recommenders a practitioner would try first, fitted on the same as-of snapshot as the ranker.

- ALS and BPR (the `implicit` library) on the user x item matrix of decayed interaction scores,
  each tuned on the validation window over a grid of configurations;
- session-kNN: neighbours of the user's latest session among earlier sessions (a sequential peer).

Every peer answers `recommend(snap, u, k) -> list[item index]` so `ml.evaluation` scores it exactly
like the baselines and the ranker.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ml.evaluation import _pad
from ml.snapshot import Snapshot

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit warns (and slows) with threaded BLAS

Recommend = Callable[[Snapshot, "int | None", int], list]


def interaction_matrix(snap: Snapshot) -> sp.csr_matrix:
    """users x items confidence: the positive part of the decayed score, plus 1 per touched item."""
    n_users = len(snap.user_ids)
    rows = np.repeat(np.arange(n_users), np.diff(snap.hist_ptr))
    vals = np.clip(snap.hist_feat[:, 6], 0, None) + 1.0
    return sp.csr_matrix((vals.astype(np.float32), (rows, snap.hist_item)), shape=(n_users, snap.n_items))


@dataclass
class MFPeer:
    """Matrix factorization peer (ALS or BPR) fitted on one snapshot."""

    kind: str
    params: dict
    user_factors: np.ndarray = field(default=None, repr=False)
    item_factors: np.ndarray = field(default=None, repr=False)
    seen: sp.csr_matrix = field(default=None, repr=False)

    def fit(self, snap: Snapshot, seed: int = 0) -> "MFPeer":
        from threadpoolctl import threadpool_limits

        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        X = interaction_matrix(snap)
        p = dict(self.params)
        alpha = float(p.pop("alpha", 1.0))
        with threadpool_limits(1):
            if self.kind == "als":
                model = AlternatingLeastSquares(random_state=seed, num_threads=1, **p)
                model.fit((X * alpha).tocsr(), show_progress=False)
            else:
                model = BayesianPersonalizedRanking(random_state=seed, num_threads=1, **p)
                model.fit(X, show_progress=False)
        self.user_factors = np.asarray(model.user_factors)
        self.item_factors = np.asarray(model.item_factors)
        self.seen = X
        return self

    def recommend(self, snap: Snapshot, u: int | None, k: int) -> list[int]:
        if u is None:
            return [int(i) for i in snap.pop_order[:k]]
        scores = self.item_factors @ self.user_factors[u]
        idx = np.arange(len(scores))
        ranked = idx[np.lexsort((idx, -scores))][:k]
        return _pad([int(i) for i in ranked], snap.pop_order, k)


ALS_GRID = {"factors": [16, 32, 64], "regularization": [0.01, 0.1, 1.0], "alpha": [1.0, 10.0, 40.0],
            "iterations": [15]}
BPR_GRID = {"factors": [16, 32, 64], "learning_rate": [0.01, 0.05], "regularization": [0.001, 0.01],
            "iterations": [100, 300]}


def grid(spec: dict) -> list[dict]:
    keys = list(spec)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(spec[k] for k in keys))]


@dataclass
class SessionKNN:
    """Session-based kNN (Jannach & Ludewig 2017): items of the sessions most similar to the user's latest one.

    Similarity = |overlap| / sqrt(|a| |b|) between item sets; the `neighbors` most similar earlier
    sessions vote for their items with their similarity.
    """

    neighbors: int = 100
    sessions: sp.csr_matrix = field(default=None, repr=False)
    session_len: np.ndarray = field(default=None, repr=False)
    last_session: dict = field(default_factory=dict, repr=False)

    def fit(self, events: pd.DataFrame, snap: Snapshot) -> "SessionKNN":
        ev = events.loc[(events["ts"] < pd.Timestamp(snap.as_of)) & events["item_id"].isin(snap.item_index)]
        ev = ev.assign(i=ev["item_id"].map(snap.item_index).astype(int))
        codes, uniques = pd.factorize(ev["session_id"].astype(str))
        pairs = pd.DataFrame({"s": codes, "i": ev["i"].to_numpy()}).drop_duplicates()
        self.sessions = sp.csr_matrix((np.ones(len(pairs), np.float32), (pairs["s"], pairs["i"])),
                                      shape=(len(uniques), snap.n_items))
        self.session_len = np.asarray(self.sessions.sum(axis=1)).ravel()
        latest = ev.loc[ev["user_id"].notna()].sort_values("ts").groupby("user_id")["session_id"].last()
        index = pd.Index(uniques)
        self.last_session = {str(u): int(index.get_loc(str(s))) for u, s in latest.items()}
        return self

    def recommend(self, snap: Snapshot, u: int | None, k: int) -> list[int]:
        if u is None:
            return [int(i) for i in snap.pop_order[:k]]
        s = self.last_session.get(str(snap.user_ids[u]))
        if s is None:
            return [int(i) for i in snap.pop_order[:k]]
        q = self.sessions[s]
        overlap = np.asarray((self.sessions @ q.T).todense()).ravel()
        overlap[s] = 0
        sim = overlap / np.sqrt(np.maximum(self.session_len * self.session_len[s], 1))
        top = np.argpartition(-sim, min(self.neighbors, len(sim) - 1))[: self.neighbors]
        top = top[sim[top] > 0]
        scores = np.asarray(self.sessions[top].T @ sim[top]).ravel()
        idx = np.flatnonzero(scores > 0)
        ranked = idx[np.lexsort((idx, -scores[idx]))][:k]
        return _pad([int(i) for i in ranked], snap.pop_order, k)


KNN_GRID = [20, 50, 100, 200, 500, 1000]


def tune_and_evaluate(events: pd.DataFrame, valid_snap: Snapshot, valid_targets: dict, test_snap: Snapshot,
                      test_targets: dict, cfg: dict, log: Callable[[str], None] = print) -> tuple[dict, dict, dict]:
    """Tune each peer family on the validation window (NDCG@10), refit the best on the test snapshot.

    Returns (lists_by_peer on the test users, chosen params by peer, validation table by peer).
    """
    from ml.evaluation import per_user_metrics
    from ml.pipeline import rankings_for

    def ndcg(snap, targets, fn) -> float:
        return float(per_user_metrics(rankings_for(snap, targets, fn), targets)["ndcg@10"].mean())

    families = {
        "als": (grid(ALS_GRID), lambda p, s: MFPeer("als", p).fit(s)),
        "bpr": (grid(BPR_GRID), lambda p, s: MFPeer("bpr", p).fit(s)),
        "session_knn": ([{"neighbors": n} for n in KNN_GRID], lambda p, s: SessionKNN(**p).fit(events, s)),
    }
    lists, chosen, tables = {}, {}, {}
    for name, (configs, make) in families.items():
        scores = []
        for params in configs:
            scores.append((ndcg(valid_snap, valid_targets, make(params, valid_snap).recommend), params))
        best_score, best = max(scores, key=lambda t: t[0])
        log(f"{name}: best of {len(configs)} configs on validation ndcg@10 {best_score:.4f} with {best}")
        peer = make(best, test_snap)
        lists[name] = rankings_for(test_snap, test_targets, peer.recommend)
        chosen[name] = best
        tables[name] = [{"params": p, "valid_ndcg@10": s} for s, p in scores]
    return lists, chosen, tables
