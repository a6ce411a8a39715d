"""As-of state, candidates and features on real GA events: no leakage, consistent shapes, known values."""

import os
from pathlib import Path

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


def test_popularity_source_ranks_by_targets_in_the_configured_recent_days(data):
    """candidates.popularity_days sets the window the popularity source counts cart/purchase events in."""
    import copy

    events, items, ids, matrix, cfg = data
    targets = set(cfg["targets"])
    for days in (1, 14):
        c = copy.deepcopy(cfg)
        c["candidates"]["popularity_days"] = days
        snap = snapshot_at(events, items, ids, matrix, CUTOFF, c)
        recent = events.loc[(events["ts"] < CUTOFF) & (events["ts"] >= CUTOFF - pd.Timedelta(days=days))
                            & events["event_type"].isin(targets) & events["item_id"].isin(ids)]
        by_hand = recent.groupby("item_id").size()
        top = [str(snap.item_ids[i]) for i in snap.pop_order[:len(by_hand)]]
        counts = by_hand.reindex(top).fillna(0).to_numpy()
        assert (np.diff(counts) <= 0).all() and counts[0] == by_hand.max() > 0, days  # most recent targets first
        assert set(top) == set(by_hand.index), days  # every item with recent targets precedes those without


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


def test_item_knn_links_items_across_a_whole_history_with_cosine_weights():
    from ml.snapshot import _item_knn

    # visitors a {x, y}, b {x, y, z}, c {z}; anonymous session s1 {x}: n_x = 3, n_y = 2, n_z = 2
    ev = pd.DataFrame({"user_id": ["a", "a", "b", "b", "b", "c", None],
                       "session_id": ["1", "9", "2", "2", "3", "4", "s1"],
                       "i": [0, 1, 0, 1, 2, 2, 0]})
    ptr, idx, w = _item_knn(ev, 4, top_k=5)
    assert list(ptr) == [0, 2, 4, 6, 6]  # item 3 was never touched: no neighbours
    assert list(idx[0:2]) == [1, 2]
    np.testing.assert_allclose(w[0:2], [2 / np.sqrt(3 * 2), 1 / np.sqrt(3 * 2)], rtol=1e-6)
    assert list(idx[4:6]) == [1, 0]  # z: y and x once each, y rarer so closer
    np.testing.assert_allclose(w[4:6], [1 / np.sqrt(2 * 2), 1 / np.sqrt(2 * 3)], rtol=1e-6)
    ptr1, idx1, _ = _item_knn(ev, 4, top_k=1)
    assert list(ptr1) == [0, 1, 2, 3, 3] and list(idx1) == [1, 0, 1]


def test_item_knn_score_sums_neighbour_weights_over_the_history():
    from ml.candidates import _spread

    ptr = np.array([0, 2, 3, 3])
    idx = np.array([1, 2, 0], dtype=np.int32)
    w = np.array([0.5, 0.25, 2.0], dtype=np.float32)
    np.testing.assert_allclose(_spread(ptr, idx, w, np.array([0, 1, 2], np.int32), 3), [2.0, 0.5, 0.25])
    np.testing.assert_allclose(_spread(ptr, idx, w, np.array([2], np.int32), 3), [0, 0, 0])


def test_folded_in_als_vector_solves_the_dense_weighted_least_squares(data):
    from ml.candidates import als_user_vector

    events, items, ids, matrix, cfg = data
    cfg = dict(cfg, candidates=dict(cfg["candidates"], als_factors=8, als_regularization=0.5, als_alpha=4.0))
    snap = snapshot_at(events, items, ids, matrix, CUTOFF, cfg)
    u = int(np.argmax(np.diff(snap.hist_ptr)))
    hist_items, hist_feat = snap.history(u)
    x = als_user_vector(snap, hist_items, hist_feat[:, FEATURES.index("ui_score")])
    # implicit ALS objective over every item: confidence 1 (preference 0) off the history,
    # alpha * (max(score, 0) + 1) (preference 1) on it; its minimiser is the closed form below
    Y = snap.als_item.astype(np.float64)
    c = np.ones(snap.n_items)
    p = np.zeros(snap.n_items)
    c[hist_items] = 4.0 * (np.clip(hist_feat[:, FEATURES.index("ui_score")], 0, None) + 1.0)
    p[hist_items] = 1.0
    expected = np.linalg.solve(Y.T @ (Y * c[:, None]) + 0.5 * np.eye(8), Y.T @ (c * p))
    np.testing.assert_allclose(x, expected, rtol=1e-3, atol=1e-5)
    assert snap.als_item.shape == (snap.n_items, 8)


def test_peer_arrays_survive_save_and_load_so_serving_builds_identical_features(data, tmp_path):
    from ml.snapshot import Snapshot

    events, items, ids, matrix, cfg = data
    cfg = dict(cfg, candidates=dict(cfg["candidates"], als_factors=8, als=20, itemknn=20))
    snap = snapshot_at(events, items, ids, matrix, CUTOFF, cfg)
    loaded = Snapshot.load(snap.save(tmp_path / "snap"))
    u = int(np.argmax(np.diff(snap.hist_ptr)))
    a, b = generate(snap, u, cfg["candidates"]), generate(loaded, u, cfg["candidates"])
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(build_features(snap, u, a), build_features(loaded, u, b))
    for j, source in enumerate(SOURCES):
        assert a.sources[:, j].sum() <= cfg["candidates"].get(source, 0) or source == "popularity"
    assert a.sources[:, SOURCES.index("als")].sum() == 20
    assert np.all(build_features(snap, u, a)[:, FEATURES.index("als_rank")] < snap.n_items)


def test_peer_arrays_ignore_events_at_or_after_the_cutoff(data):
    events, items, ids, matrix, cfg = data
    cfg = dict(cfg, candidates=dict(cfg["candidates"], als_factors=8))
    a = snapshot_at(events, items, ids, matrix, CUTOFF, cfg)
    b = snapshot_at(events[events["ts"] < CUTOFF], items, ids, matrix, CUTOFF, cfg)
    for name in ("knn_ptr", "knn_idx", "knn_w", "als_item", "als_gram"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_folded_in_als_vector_reproduces_implicits_user_factors_for_a_training_user(data):
    """The snapshot keeps only item factors; serving folds a user in with numpy. For a user the model was
    fitted on, that equals implicit's own exact user step on the final item factors (recalculate_user), and
    the fitted factor itself up to implicit's conjugate-gradient steps against the previous iteration's items."""
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from ml.candidates import als_user_vector

    events, items, ids, matrix, cfg = data
    cfg = dict(cfg, candidates=dict(cfg["candidates"], als_factors=8, als_regularization=0.5, als_alpha=4.0))
    snap = snapshot_at(events, items, ids, matrix, CUTOFF, cfg)
    n_users = len(snap.hist_ptr) - 1
    score = snap.hist_feat[:, FEATURES.index("ui_score")]
    conf = (np.clip(score, 0, None) + 1.0) * 4.0
    X = sp.csr_matrix((conf.astype(np.float32), (np.repeat(np.arange(n_users), np.diff(snap.hist_ptr)), snap.hist_item)),
                      shape=(n_users, snap.n_items))
    with threadpool_limits(1):
        model = AlternatingLeastSquares(factors=8, regularization=0.5, iterations=15, random_state=0, num_threads=1)
        model.fit(X, show_progress=False)
    np.testing.assert_array_equal(model.item_factors, snap.als_item)  # the same fit as the snapshot's
    users = [int(np.argmax(np.diff(snap.hist_ptr))), 0, n_users // 2, n_users - 1]
    for u in users:
        hist_items, hist_feat = snap.history(u)
        x = als_user_vector(snap, hist_items, hist_feat[:, FEATURES.index("ui_score")])
        np.testing.assert_allclose(x, model.recalculate_user(u, X[u]), rtol=1e-4, atol=1e-6)
        fitted = model.user_factors[u]
        assert np.linalg.norm(x - fitted) < 0.1 * np.linalg.norm(fitted), u


def test_serving_loads_a_snapshot_with_peer_arrays_and_scores_without_scipy_implicit_or_lightgbm(data, tmp_path):
    """serving.bundle imports ml.snapshot/candidates/features: loading a snapshot with ALS factors and kNN
    lists and building candidates and features for a known and an online user must need numpy alone."""
    import subprocess
    import sys
    import textwrap

    events, items, ids, matrix, cfg = data
    cfg = dict(cfg, candidates=dict(cfg["candidates"], als_factors=8, als=20, itemknn=20))
    snap = snapshot_at(events, items, ids, matrix, CUTOFF, cfg)
    snap.save(tmp_path / "snap")
    u = int(np.argmax(np.diff(snap.hist_ptr)))
    cand = generate(snap, u, cfg["candidates"])
    np.save(tmp_path / "expected.npy", build_features(snap, u, cand))
    per_source = {k: int(cfg["candidates"][k]) for k in SOURCES}
    script = textwrap.dedent(f"""
        import sys
        BLOCKED = ("scipy", "implicit", "lightgbm", "sklearn")
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        import serving.bundle  # noqa: F401
        from ml.candidates import SOURCES, generate
        from ml.features import FEATURES, build_features
        from ml.snapshot import Snapshot
        from serving.online import OnlineEvent, user_view
        snap = Snapshot.load({str(tmp_path / "snap")!r})
        per_source = {per_source!r}
        cand = generate(snap, {u}, per_source)
        np.testing.assert_array_equal(build_features(snap, {u}, cand), np.load({str(tmp_path / "expected.npy")!r}))
        item = str(snap.item_ids[int(snap.pop_order[0])])
        view = user_view(snap, None, [OnlineEvent("e1", "new", "s", "2016-10-01T00:00:00", "cart", item, 10.0)],
                         {{"cart": 3.0}})
        online = generate(view, 0, per_source)
        X = build_features(view, 0, online)
        assert online.sources[:, SOURCES.index("als")].sum() == 20
        assert np.any(X[:, FEATURES.index("als_score")] != 0) and not np.isnan(X).any()
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        print("ok")
    """)
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(root)))
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
