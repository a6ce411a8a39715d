"""Ranking metrics, baselines and bootstrap intervals, computed the same way for every model.

Binary relevance: an item is relevant when the user has a target event on it in the window.
- NDCG@k: DCG = sum over hits at rank r (1-based) of 1/log2(r+1); ideal DCG over min(|rel|, k) hits.
- Recall@k: hits in the top k / |rel|.
- MRR@k: 1 / rank of the first hit within the top k, else 0.
- HitRate@k: 1 if any hit within the top k.
A user with no relevant items scores 0 on every metric (such users are excluded from the test set
by construction, but the functions stay total).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

from ml.snapshot import Snapshot


def ndcg_at_k(ranked: Sequence, relevant: set, k: int) -> float:
    if not relevant:
        return 0.0
    dcg = sum(1.0 / np.log2(r + 2) for r, item in enumerate(list(ranked)[:k]) if item in relevant)
    idcg = sum(1.0 / np.log2(r + 2) for r in range(min(len(relevant), k)))
    return float(dcg / idcg)


def recall_at_k(ranked: Sequence, relevant: set, k: int) -> float:
    if not relevant:
        return 0.0
    return len(set(list(ranked)[:k]) & relevant) / len(relevant)


def mrr_at_k(ranked: Sequence, relevant: set, k: int) -> float:
    for r, item in enumerate(list(ranked)[:k]):
        if item in relevant:
            return 1.0 / (r + 1)
    return 0.0


def hit_rate_at_k(ranked: Sequence, relevant: set, k: int) -> float:
    return float(any(item in relevant for item in list(ranked)[:k]))


METRICS: dict[str, Callable[[Sequence, set], float]] = {
    "ndcg@10": lambda r, rel: ndcg_at_k(r, rel, 10),
    "recall@20": lambda r, rel: recall_at_k(r, rel, 20),
    "mrr@20": lambda r, rel: mrr_at_k(r, rel, 20),
    "hitrate@10": lambda r, rel: hit_rate_at_k(r, rel, 10),
}


def per_user_metrics(ranked_by_user: dict[str, Sequence], targets: dict[str, set]) -> dict[str, np.ndarray]:
    """Metric arrays aligned to sorted(targets); a user without a list scores 0."""
    users = sorted(targets)
    return {name: np.array([fn(ranked_by_user.get(u, []), targets[u]) for u in users], dtype=np.float64)
            for name, fn in METRICS.items()}


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of the mean, resampling users with replacement."""
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    return (float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2)))


def summarize(per_user: dict[str, np.ndarray], n_boot: int, seed: int) -> dict:
    out = {}
    for name, vals in per_user.items():
        lo, hi = bootstrap_ci(vals, n_boot, seed)
        out[name] = float(vals.mean()) if len(vals) else float("nan")
        out[f"{name}_ci"] = [lo, hi]
    out["n_users"] = int(len(next(iter(per_user.values())))) if per_user else 0
    return out


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> dict:
    """Mean of a - b over the same users with its bootstrap interval."""
    d = a - b
    lo, hi = bootstrap_ci(d, n_boot, seed)
    return {"mean": float(d.mean()), "ci": [lo, hi]}


def _pad(ranked: list[int], fill: Iterable[int], k: int) -> list[int]:
    seen = set(ranked)
    out = list(ranked)
    for i in fill:
        if len(out) >= k:
            break
        if i not in seen:
            out.append(int(i))
            seen.add(int(i))
    return out


def baseline_popularity(snap: Snapshot, u: int | None, k: int) -> list[int]:
    """Most targeted items in the last 7 days before the cutoff (ties: all-time)."""
    return [int(i) for i in snap.pop_order[:k]]


def baseline_repeat(snap: Snapshot, u: int | None, k: int) -> list[int]:
    """The user's own past items, most frequent first, then most recent; padded with popular items."""
    if u is None:
        return baseline_popularity(snap, u, k)
    items, feat = snap.history(u)
    count = feat[:, :6].sum(axis=1)
    recency = feat[:, 7]
    order = np.lexsort((recency, -count))
    return _pad([int(i) for i in items[order]], snap.pop_order, k)


def baseline_covisitation(snap: Snapshot, u: int | None, k: int) -> list[int]:
    """Items co-visited with the user's recent items (recency-weighted); padded with popular items."""
    from ml.candidates import user_scores

    if u is None:
        return baseline_popularity(snap, u, k)
    s = user_scores(snap, u).covis
    idx = np.flatnonzero(s > 0)
    ranked = idx[np.lexsort((idx, -s[idx]))][:k]
    return _pad([int(i) for i in ranked], snap.pop_order, k)


BASELINES = {"popularity": baseline_popularity, "covisitation": baseline_covisitation, "repeat": baseline_repeat}


def catalog_coverage(ranked_by_user: dict[str, Sequence], n_items: int, k: int = 10) -> float:
    """Share of the catalog that appears in at least one user's top k."""
    seen = set()
    for ranked in ranked_by_user.values():
        seen.update(list(ranked)[:k])
    return len(seen) / n_items if n_items else 0.0


def popularity_bias(ranked_by_user: dict[str, Sequence], pop_percentile: dict, k: int = 10) -> float:
    """Mean popularity percentile (1.0 = the most popular item) of recommended items in the top k."""
    vals = [pop_percentile.get(i, 0.0) for ranked in ranked_by_user.values() for i in list(ranked)[:k]]
    return float(np.mean(vals)) if vals else 0.0


def new_items_only(ranked_by_user: dict[str, Sequence], targets: dict[str, set], history: dict[str, set]
                   ) -> tuple[dict[str, list], dict[str, set]]:
    """Lists without the user's past items, and targets they had not touched before; users without such targets drop."""
    new_targets = {u: rel - history.get(u, set()) for u, rel in targets.items()}
    new_targets = {u: rel for u, rel in new_targets.items() if rel}
    lists = {u: [i for i in ranked_by_user.get(u, []) if i not in history.get(u, set())] for u in new_targets}
    return lists, new_targets
