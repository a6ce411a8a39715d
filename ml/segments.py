"""User segments: KMeans on profile vectors, k picked by silhouette, a summary table and a 2-D picture.

Why silhouette on a sample: the exact score is O(n^2) (30k users = 900M distances); a few thousand
points rank the candidate k the same way at a fraction of the cost. Segments are renumbered by size
(0 = largest) so the same data gives the same numbering run after run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.tags import LIFECYCLE_STAGES, PRICE_BANDS


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


@dataclass(frozen=True)
class SegmentPlot:
    """What `plot_segments` drew, read back from the figure before saving (so tests check the picture)."""

    path: Path
    xlabel: str
    ylabel: str
    title: str
    legend_labels: list[str]
    explained_variance: tuple[float, float]


def plot_segments(X: np.ndarray, labels: np.ndarray, path: str | Path, max_points: int = 20_000,
                  seed: int = 0, title: str = "User segments (PCA of profile vectors)") -> SegmentPlot:
    """Write a PNG scatter of the first two principal components, one colour and legend entry per segment.

    Axes say how much of the vectors' variance each component keeps ("PC1 (12.3% var)"), so a
    reader knows how much of the separation the flat picture can show. Above `max_points` users a
    seeded sample is drawn; the legend still gives each segment's full size.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    X = np.asarray(X, dtype=np.float32)
    labels = np.asarray(labels)
    if len(X) != len(labels):
        raise ValueError(f"plot_segments: {len(X)} vectors but {len(labels)} segment labels")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    segs, sizes = np.unique(labels, return_counts=True)
    if len(X) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(X), size=max_points, replace=False))
        X, labels = X[keep], labels[keep]
    var = (0.0, 0.0)
    if len(X) >= 2 and X.shape[1] >= 2:
        pca = PCA(n_components=2, random_state=seed)
        xy = pca.fit_transform(X)
        ratio = np.nan_to_num(pca.explained_variance_ratio_, nan=0.0)
        var = (float(ratio[0]), float(ratio[1]))
    else:
        xy = np.zeros((len(X), 2))
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    try:
        cmap = plt.get_cmap("tab10")
        for i, (seg, size) in enumerate(zip(segs, sizes)):
            m = labels == seg
            ax.scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.5, color=cmap(i % 10),
                       label=f"segment {seg} ({size:,} users)")
        ax.set_xlabel(f"PC1 ({var[0]:.1%} var)")
        ax.set_ylabel(f"PC2 ({var[1]:.1%} var)")
        ax.set_title(title)
        legend = ax.legend(markerscale=4, fontsize=8, loc="best") if len(segs) else None
        fig.tight_layout()
        info = SegmentPlot(path=path, xlabel=ax.get_xlabel(), ylabel=ax.get_ylabel(), title=ax.get_title(),
                           legend_labels=[t.get_text() for t in legend.get_texts()] if legend else [],
                           explained_variance=var)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return info


BAND_ORDER = PRICE_BANDS  # cheapest first
LIFECYCLE_ORDER = LIFECYCLE_STAGES
SUMMARY_TAGS = 5
SUMMARY_CATEGORIES = 3


def median_band(bands: Any) -> str | None:
    """The median of ordered price bands (budget < mid < premium), users without a band left out.

    With an even count the lower of the two middle bands is taken, so the answer is always a band.
    """
    codes = sorted(BAND_ORDER.index(b) for b in bands if isinstance(b, str) and b in BAND_ORDER)
    return BAND_ORDER[codes[(len(codes) - 1) // 2]] if codes else None


def lifecycle_mix(stages: Any) -> str:
    """Share of each lifecycle stage, all four in a fixed order: "new 10% · active 40% · at_risk 0% · lapsed 50%"."""
    s = pd.Series(list(stages), dtype=object)
    n = max(len(s), 1)
    return " · ".join(f"{st} {int((s == st).sum()) / n:.0%}" for st in LIFECYCLE_ORDER)


def summarize_segments(profiles: pd.DataFrame, scores: dict[int, float] | None = None) -> pd.DataFrame:
    """One row per segment: users, share, top tags, top categories, median price band, lifecycle mix.

    A tag characterises a segment when at least 20% of its users carry it; those are ranked by lift
    (share in the segment / share overall), so "brand:Google", which nearly everyone has, does not
    describe every segment. If no tag reaches 20%, the segment's most frequent tags are used. Ties
    go to the tag name, so the table is the same run after run. Top categories are the ones most
    often among the members' own top categories (share of members).
    """
    cols = ["segment", "users", "share", "top_tags", "top_categories", "median_price_band", "lifecycle_mix",
            "description"]
    n = len(profiles)
    if n == 0:
        return pd.DataFrame(columns=cols)
    exploded = profiles[["user_id", "segment", "tags"]].explode("tags").dropna(subset=["tags"])
    overall = exploded.groupby("tags")["user_id"].nunique() / n
    cats = profiles[["user_id", "segment", "top_categories"]].explode("top_categories").dropna(
        subset=["top_categories"])
    rows = []
    for seg, members in profiles.groupby("segment", sort=True):
        size = len(members)
        seg_tags = exploded[exploded["segment"] == seg].groupby("tags")["user_id"].nunique() / size
        frame = pd.DataFrame({"share": seg_tags, "lift": (seg_tags / overall.reindex(seg_tags.index)).round(9),
                              "tag": seg_tags.index})
        strong = frame[frame["share"] >= 0.2].sort_values(["lift", "share", "tag"], ascending=[False, False, True])
        if strong.empty:
            strong = frame.sort_values(["share", "tag"], ascending=[False, True])
        top = strong.index[:SUMMARY_TAGS].tolist()
        cat_share = (cats[cats["segment"] == seg].groupby("top_categories")["user_id"].nunique() / size)
        cat_share = cat_share.reset_index().sort_values(["user_id", "top_categories"], ascending=[False, True])
        top_cats = cat_share["top_categories"].head(SUMMARY_CATEGORIES).tolist()
        cat_pct = dict(zip(cat_share["top_categories"], cat_share["user_id"]))
        band = median_band(members["price_band"])
        mix = lifecycle_mix(members["lifecycle_stage"])
        shown = ", ".join(f"{t} ({frame.loc[t, 'share']:.0%})" for t in top) or "no tags"
        shown_cats = ", ".join(f"{c} ({cat_pct[c]:.0%})" for c in top_cats) or "none"
        rows.append({
            "segment": int(seg),
            "users": int(size),
            "share": size / n,
            "top_tags": top,
            "top_categories": top_cats,
            "median_price_band": band,
            "lifecycle_mix": mix,
            "description": f"Segment {seg}: {size:,} users ({size / n:.1%}); characteristic tags: {shown}; "
                           f"top categories: {shown_cats}; median price band {band or 'unknown'}; {mix}",
        })
    summary = pd.DataFrame(rows, columns=cols)
    if scores:
        summary.attrs["silhouette_by_k"] = dict(scores)
    return summary
