"""User segments: KMeans on profile vectors, k picked by silhouette, plus a 2-D picture of them.

Why silhouette on a sample: the exact score is O(n^2) (30k users = 900M distances); a few thousand
points rank the candidate k the same way at a fraction of the cost. Segments are renumbered by size
(0 = largest) so the same data gives the same numbering run after run.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd


def choose_k_and_cluster(X: np.ndarray, k_min: int = 3, k_max: int = 8, sample: int = 4000,
                         seed: int = 0) -> tuple[np.ndarray, int, dict[int, float]]:
    """(labels, k, {k: silhouette}) for the k in [k_min, k_max] with the best sampled silhouette.

    Tiny or degenerate inputs (fewer rows or distinct rows than k_min) get a single segment 0 and
    an empty score dict, because a silhouette needs at least two clusters with members.
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import pairwise_distances, silhouette_score

    X = np.asarray(X, dtype=np.float64)  # float64: sklearn's float32 distance path upcasts in chunks (2x slower)
    n = len(X)
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0, {}
    # Many users share a vector (one item, same weights): cluster distinct rows, weighted by count.
    inverse, _ = pd.factorize(pd.Series([row.tobytes() for row in X]))  # hash-dedupe, no row sort
    _, first, counts = np.unique(inverse, return_index=True, return_counts=True)
    U = X[first]
    k_hi = min(int(k_max), len(U), n - 1)
    k_lo = max(int(k_min), 2)
    if k_hi < k_lo:
        return np.zeros(n, dtype=np.int64), 1, {}

    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(int(sample), n), replace=False)) if sample and sample < n else np.arange(n)
    # One sample distance matrix serves every k (silhouette only needs the labels to change).
    D = pairwise_distances(X[idx]).astype(np.float32)
    np.fill_diagonal(D, 0.0)
    scores: dict[int, float] = {}
    fits: dict[int, np.ndarray] = {}
    for k in range(k_lo, k_hi + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            km = KMeans(n_clusters=k, n_init=2, random_state=seed).fit(U, sample_weight=counts)
        labels = km.labels_[inverse]
        sub = labels[idx]
        scores[k] = float(silhouette_score(D, sub, metric="precomputed")) if len(np.unique(sub)) > 1 else -1.0
        fits[k] = labels
    best = max(scores, key=lambda k: (scores[k], -k))  # ties -> fewer segments
    return _renumber_by_size(fits[best]), best, scores


def _renumber_by_size(labels: np.ndarray) -> np.ndarray:
    ids, counts = np.unique(labels, return_counts=True)
    order = ids[np.lexsort((ids, -counts))]
    mapping = np.empty(ids.max() + 1, dtype=np.int64)
    mapping[order] = np.arange(len(order))
    return mapping[labels]


def plot_segments(X: np.ndarray, labels: np.ndarray, path: str | Path, max_points: int = 20_000,
                  seed: int = 0, title: str = "User segments (PCA of profile vectors)") -> Path:
    """Write a PNG scatter of the first two principal components, one colour per segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    X = np.asarray(X, dtype=np.float32)
    labels = np.asarray(labels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    segs, sizes = np.unique(labels, return_counts=True)  # legend shows full sizes, not the plotted sample
    if len(X) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(X), size=max_points, replace=False))
        X, labels = X[keep], labels[keep]
    if len(X) >= 2 and X.shape[1] >= 2:
        xy = PCA(n_components=2, random_state=seed).fit_transform(X)
    else:
        xy = np.zeros((len(X), 2))
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    cmap = plt.get_cmap("tab10")
    for i, (seg, size) in enumerate(zip(segs, sizes)):
        m = labels == seg
        ax.scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.5, color=cmap(i % 10), label=f"segment {seg} ({size:,} users)")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    if len(labels):
        ax.legend(markerscale=4, fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
