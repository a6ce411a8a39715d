"""Segment summary table and segment map, checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.segments import choose_k_and_cluster, lifecycle_mix, median_band, plot_segments, summarize_segments


def test_segment_map_has_variance_axis_labels_and_one_legend_entry_per_segment(tmp_path):
    # Centred points on the axes: variance 18/4 along x, 2/4 along y, 0 along z -> PC1 90%, PC2 10%.
    X = np.array([[3, 0, 0], [-3, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 2])
    plot = plot_segments(X, labels, tmp_path / "maps" / "seg.png", title="t")
    assert plot.xlabel == "PC1 (90.0% var)" and plot.ylabel == "PC2 (10.0% var)"
    assert plot.legend_labels == ["segment 0 (2 users)", "segment 1 (1 users)", "segment 2 (1 users)"]
    assert plot.explained_variance == pytest.approx((0.9, 0.1))
    assert plot.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_segment_map_legend_counts_all_users_when_the_scatter_is_sampled(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 6)).astype(np.float32)
    labels = np.repeat([0, 1, 2, 3], [200, 150, 100, 50])
    plot = plot_segments(X, labels, tmp_path / "seg.png", max_points=60)
    assert plot.legend_labels == ["segment 0 (200 users)", "segment 1 (150 users)", "segment 2 (100 users)",
                                  "segment 3 (50 users)"]
    with pytest.raises(ValueError, match="500 vectors but 499 segment labels"):
        plot_segments(X, labels[:-1], tmp_path / "bad.png")


def test_median_band_and_lifecycle_mix():
    assert median_band(["premium", "budget", None, "mid"]) == "mid"
    assert median_band(["premium", "budget"]) == "budget"  # even count: the lower middle band
    assert median_band([None, np.nan]) is None
    assert lifecycle_mix(["new", "lapsed", "lapsed", "active"]) == "new 25% · active 25% · at_risk 0% · lapsed 50%"


def test_summary_table_by_hand():
    profiles = pd.DataFrame({
        "user_id": list("abcde"),
        "segment": [0, 0, 0, 1, 1],
        "tags": [["category:Bags", "lifecycle:new"], ["category:Bags", "lifecycle:lapsed"], ["lifecycle:lapsed"],
                 ["category:Office", "lifecycle:active"], ["category:Office", "category:Bags", "lifecycle:active"]],
        "top_categories": [["Bags"], ["Bags", "Office"], [], ["Office"], ["Office", "Bags"]],
        "price_band": ["budget", "premium", None, "mid", "mid"],
        "lifecycle_stage": ["new", "lapsed", "lapsed", "active", "active"],
    })
    s = summarize_segments(profiles, {2: 0.31}).set_index("segment")
    assert s["users"].tolist() == [3, 2] and s["share"].tolist() == pytest.approx([0.6, 0.4])
    # Segment 0 tag shares: Bags 2/3 (overall 3/5, lift 1.11), lapsed 2/3 (overall 2/5, lift 1.67),
    # new 1/3 (overall 1/5, lift 1.67): ranked by lift, then share.
    assert s.loc[0, "top_tags"] == ["lifecycle:lapsed", "lifecycle:new", "category:Bags"]
    # Segment 1: Office 2/2 (lift 2.5), active 2/2 (lift 2.5), Bags 1/2 (lift 0.83).
    assert s.loc[1, "top_tags"] == ["category:Office", "lifecycle:active", "category:Bags"]
    assert s.loc[0, "top_categories"] == ["Bags", "Office"]  # 2/3 of members, 1/3
    assert s.loc[1, "top_categories"] == ["Office", "Bags"]  # 2/2, 1/2
    assert s.loc[0, "median_price_band"] == "budget"  # [budget, premium]: lower middle
    assert s.loc[1, "median_price_band"] == "mid"
    assert s.loc[0, "lifecycle_mix"] == "new 33% · active 0% · at_risk 0% · lapsed 67%"
    assert s.loc[1, "lifecycle_mix"] == "new 0% · active 100% · at_risk 0% · lapsed 0%"
    assert s.loc[0, "description"].startswith("Segment 0: 3 users (60.0%); characteristic tags: lifecycle:lapsed (67%)")
    assert s.attrs["silhouette_by_k"] == {2: 0.31}


def test_kmeans_finds_well_separated_groups_and_numbers_them_by_size():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 10
    X = np.vstack([c + rng.normal(scale=0.1, size=(n, 8)) for c, n in zip(centres, (60, 40, 20))])
    labels, k, scores = choose_k_and_cluster(X, 2, 6, 1000)
    assert k == 3 and max(scores, key=scores.get) == 3
    assert np.bincount(labels).tolist() == [60, 40, 20]
    assert labels[:60].tolist() == [0] * 60 and labels[-20:].tolist() == [2] * 20
