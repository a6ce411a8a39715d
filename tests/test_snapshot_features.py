"""As-of state, candidates and features on real GA events: no leakage, consistent shapes, known values."""

import numpy as np
import pandas as pd
import pytest

from data_contracts.adapters import ga_merch
from ml.candidates import SOURCES, generate
from ml.features import FEATURES, build_features
from ml.pipeline import snapshot_at
from ml.split import SplitError, eligible_targets, make_split
from persona.config import load_settings
from tests.conftest import GA_PATH

CUTOFF = pd.Timestamp("2016-10-01")


@pytest.fixture(scope="module")
def data():
    r = ga_merch.load(GA_PATH)
    events = r.events.to_pandas()
    events = events[events["ts"] < pd.Timestamp("2016-10-08")]  # five weeks keep it fast
    items = r.items.to_pandas()
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(len(items), 16)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    cfg = load_settings(environ={}).data
    return events, items, list(items["item_id"]), matrix, cfg


def test_events_at_or_after_the_cutoff_change_nothing(data):
    events, items, ids, matrix, cfg = data
    a = snapshot_at(events, items, ids, matrix, CUTOFF, cfg)
    b = snapshot_at(events[events["ts"] < CUTOFF], items, ids, matrix, CUTOFF, cfg)
    for name in ("item_feat", "pop_order", "covis_idx", "covis_w", "user_feat", "user_vec", "hist_item", "hist_feat"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert list(a.user_ids) == sorted(events.loc[(events["ts"] < CUTOFF) & events["user_id"].notna(), "user_id"].unique())


def test_features_follow_the_one_ordered_list(data):
    events, items, ids, matrix, cfg = data
    snap = snapshot_at(events, items, ids, matrix, CUTOFF, cfg)
    u = int(np.argmax(np.diff(snap.hist_ptr)))
    cand = generate(snap, u, cfg["candidates"])
    X = build_features(snap, u, cand)
    assert X.shape == (len(cand.items), len(FEATURES)) and X.dtype == np.float32
    assert not np.isnan(X).any()
    hist_items, hist_feat = snap.history(u)
    # the past items with the highest decayed scores are repeat candidates, flagged, with their own counts
    top = hist_items[np.argsort(-hist_feat[:, FEATURES.index("ui_score")], kind="stable")[:cfg["candidates"]["repeat"] - 1]]
    assert set(top) <= set(cand.items)
    row = list(cand.items).index(hist_items[0])
    assert X[row, FEATURES.index("is_repeat")] == 1.0
    np.testing.assert_array_equal(X[row, :6], hist_feat[0, :6])
    assert cand.sources.shape[1] == len(SOURCES)
    np.testing.assert_array_equal(X[:, FEATURES.index("n_sources")], cand.sources.sum(axis=1))


def test_unknown_users_get_popular_candidates_only(data):
    events, items, ids, matrix, cfg = data
    snap = snapshot_at(events, items, ids, matrix, CUTOFF, cfg)
    cand = generate(snap, None, {"popularity": 7})
    np.testing.assert_array_equal(cand.items, snap.pop_order[:7])
    assert cand.sources[:, SOURCES.index("popularity")].all()


def test_split_needs_history_before_the_first_window_and_targets_need_history():
    with pytest.raises(SplitError, match="too short"):
        make_split(pd.Timestamp("2016-10-01"), pd.Timestamp("2016-10-20"), 14, 14, 14, 1)
    s = make_split(pd.Timestamp("2016-08-01"), pd.Timestamp("2016-10-31 23:00"), 14, 14, 14, 3)
    assert s.end == pd.Timestamp("2016-11-01") and s.test.start == pd.Timestamp("2016-10-18")
    assert s.train[0].start == pd.Timestamp("2016-08-23")
    ev = pd.DataFrame({"user_id": ["a", "a", "b", None], "item_id": ["x", "y", "y", "y"],
                       "event_type": ["view", "cart", "cart", "cart"],
                       "ts": pd.to_datetime(["2016-10-01", "2016-10-20", "2016-10-20", "2016-10-20"])})
    assert eligible_targets(ev, s.test, ["cart", "purchase"]) == {"a": {"y"}}
