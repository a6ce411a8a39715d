"""The ONNX ranker scorer returns LightGBM's scores for any batch size, from any number of threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import lightgbm as lgb
import numpy as np

from ml.onnx_export import OnnxScorer, export_ranker


def _ranker(tmp_path):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(600, 6)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
    model = lgb.LGBMRanker(n_estimators=25, num_leaves=7, min_child_samples=5, verbose=-1)
    model.fit(X, y, group=[30] * 20)
    path = export_ranker(model, X.shape[1], tmp_path / "ranker.onnx")
    return model.booster_, OnnxScorer(path, providers=["CPUExecutionProvider"]), rng


def test_scores_equal_lightgbm_for_growing_and_shrinking_batches(tmp_path):
    booster, scorer, rng = _ranker(tmp_path)
    for n in (1, 500, 3, 1200, 17):  # the reused output buffer grows, then serves smaller batches
        X = rng.normal(size=(n, 6)).astype(np.float32)
        got = scorer(X)
        assert got.shape == (n,) and got.dtype == np.float64
        np.testing.assert_allclose(got, booster.predict(X), atol=1e-5)
    assert scorer(np.zeros((0, 6), np.float32)).shape == (0,)


def test_a_returned_array_is_not_overwritten_by_the_next_call(tmp_path):
    booster, scorer, rng = _ranker(tmp_path)
    A, B = rng.normal(size=(50, 6)).astype(np.float32), rng.normal(size=(50, 6)).astype(np.float32)
    first = scorer(A)
    scorer(B)
    np.testing.assert_allclose(first, booster.predict(A), atol=1e-5)


def test_concurrent_threads_each_get_their_own_rows_scores(tmp_path):
    booster, scorer, rng = _ranker(tmp_path)
    batches = [rng.normal(size=(int(rng.integers(1, 400)), 6)).astype(np.float32) for _ in range(64)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(scorer, batches))
    for X, got in zip(batches, results):
        np.testing.assert_allclose(got, booster.predict(X), atol=1e-5)
