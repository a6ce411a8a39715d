"""Evidently data drift on real GA Merchandise Store events turned into per-event numeric/categorical features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_contracts.adapters import ga_merch
from ml.drift import DriftResult, data_drift
from persona.config import PROJECT_ROOT

GA_PATH = PROJECT_ROOT / "data/ga_merch_store/product_events_2016-08_2016-10.parquet"

pytestmark = pytest.mark.skipif(not GA_PATH.exists(), reason=f"{GA_PATH} not present")


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    """One row per event: price, quantity, hour, weekday, event type and the item's top-level category."""
    r = ga_merch.load(GA_PATH)
    ev = r.events.to_pandas()
    items = r.items.to_pandas()
    top_category = items.set_index("item_id")["category_path"].str.split("/").str[0]
    return pd.DataFrame({
        "price": ev["price"],
        "quantity": ev["quantity"],
        "hour": ev["ts"].dt.hour,
        "weekday": ev["ts"].dt.dayofweek,
        "event_type": ev["event_type"],
        "category": ev["item_id"].map(top_category).fillna("(unknown)"),
    })


@pytest.fixture(scope="module")
def halves(features):
    """Two disjoint random halves of the same window."""
    idx = np.random.default_rng(1).permutation(len(features))
    mid = len(features) // 2
    return features.iloc[idx[:mid]], features.iloc[idx[mid:]]


def test_resample_of_same_window_has_low_drift(halves, tmp_path):
    ref, cur = halves
    html = tmp_path / "reports" / "drift.html"
    res = data_drift(ref, cur, max_rows=5000, seed=0, html_path=html)
    assert isinstance(res, DriftResult)
    assert res.n_columns == 6 and set(res.columns) == set(ref.columns)
    assert res.n_reference == res.n_current == 5000
    assert res.share_drifted <= 0.2, res.to_markdown()
    assert not res.dataset_drift
    assert not res.columns["price"]["drifted"]
    # >1000 rows: Evidently uses distances; price is numeric, category categorical
    assert res.columns["price"]["method"].startswith("Wasserstein")
    assert res.columns["category"]["method"].startswith("Jensen-Shannon")
    assert res.columns["price"]["threshold"] == pytest.approx(0.1)
    assert 0 <= res.columns["price"]["score"] < res.columns["price"]["threshold"]
    assert res.html_path == html and html.stat().st_size > 10_000
    assert "<html" in html.read_text()[:2000].lower()
    assert "| price |" in res.to_markdown()


def test_price_shift_and_removed_category_drift(halves):
    ref, cur = halves
    shifted = cur[cur["category"] != "Apparel"].assign(price=lambda d: d["price"] * 1.5)
    res = data_drift(ref, shifted, max_rows=5000, seed=0)
    assert res.columns["price"]["drifted"], res.to_markdown()
    assert res.columns["category"]["drifted"], res.to_markdown()
    assert {"price", "category"} <= set(res.drifted_columns)
    assert res.columns["price"]["score"] >= res.columns["price"]["threshold"]
    assert not res.columns["hour"]["drifted"]
    assert res.n_drifted == len(res.drifted_columns) >= 2
    assert res.share_drifted == pytest.approx(res.n_drifted / res.n_columns)
    md = res.to_markdown()
    assert md.splitlines()[4].startswith("| category |") or md.splitlines()[4].startswith("| price |")


def test_constant_and_null_columns_and_column_subset(features):
    sample = features.sample(n=4000, random_state=3)
    ref = sample.iloc[:2000].assign(const=1.0, store="GA", empty=np.nan)
    cur = sample.iloc[2000:].assign(const=1.0, store="GA", empty=np.nan, appeared=1.0)
    ref = ref.assign(appeared=np.nan)
    res = data_drift(ref, cur, columns=["price", "const", "store", "empty", "appeared"], max_rows=1500, seed=7)
    assert list(res.columns) == ["price", "const", "store", "empty", "appeared"]
    assert res.n_reference == res.n_current == 1500
    assert not res.columns["const"]["drifted"] and not res.columns["store"]["drifted"]
    assert res.columns["empty"] == {"type": "numerical", "drifted": False, "method": "all_null",
                                    "score": None, "threshold": None, "drift_when": None}
    assert res.columns["appeared"]["drifted"] and res.columns["appeared"]["method"] == "null_on_one_side"
    assert res.n_drifted == 1 + int(res.columns["price"]["drifted"])
    # same seed -> same samples -> same scores
    again = data_drift(ref, cur, columns=["price", "const", "store", "empty", "appeared"], max_rows=1500, seed=7)
    assert again.columns["price"]["score"] == res.columns["price"]["score"]


def test_small_samples_use_p_values(features):
    ref = features.iloc[:400]
    cur = features.iloc[-400:].assign(price=lambda d: d["price"] * 1.5)
    res = data_drift(ref, cur, columns=["price", "event_type"], max_rows=5000)
    assert "p_value" in res.columns["price"]["method"]
    assert res.columns["price"]["drift_when"] == "score < threshold"
    assert res.columns["price"]["drifted"] and res.columns["price"]["score"] < 0.05


def test_unknown_column_rejected(features):
    with pytest.raises(KeyError, match="nope"):
        data_drift(features.head(10), features.head(10), columns=["nope"])
