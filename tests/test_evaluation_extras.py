"""Coverage, popularity bias and the new-items-only view, on hand-made lists."""

import numpy as np
import pytest

from ml.evaluation import catalog_coverage, new_items_only, popularity_bias


def test_catalog_coverage_counts_distinct_items_in_top_k():
    lists = {"u": ["a", "b", "c"], "v": ["a", "d"]}
    assert catalog_coverage(lists, 10, k=2) == pytest.approx(3 / 10)


def test_popularity_bias_is_the_mean_percentile_of_recommended_items():
    assert popularity_bias({"u": ["a", "b"]}, {"a": 1.0, "b": 0.5}, k=2) == pytest.approx(0.75)


def test_new_items_only_drops_past_items_and_users_with_only_repeat_targets():
    lists, targets = new_items_only({"u": ["a", "x", "b"], "v": ["a"]}, {"u": {"a", "x"}, "v": {"a"}},
                                    {"u": {"a"}, "v": {"a"}})
    assert targets == {"u": {"x"}}
    assert lists == {"u": ["x", "b"]}


def _ranking_data(seed: int):
    from ml.candidates import SOURCES
    from ml.features import FEATURES
    from ml.ranker import RankingData

    rng = np.random.default_rng(seed)
    groups = np.full(60, 10)
    X = rng.normal(size=(600, len(FEATURES))).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.normal(size=600) > 1.0).astype(np.float32)
    return RankingData(X, y, groups, [f"u{i}" for i in range(60)], np.tile(np.arange(10, dtype=np.int32), 60),
                       np.ones((600, len(SOURCES)), bool))


def test_tune_ranker_keeps_the_config_with_the_best_validation_ndcg_and_rejects_unknown_keys():
    from ml.ranker import tune_ranker

    cfg = {"ranker": {"n_estimators": 30, "learning_rate": 0.1, "num_leaves": 7, "min_child_samples": 5,
                      "early_stopping_rounds": 5, "seed": 1,
                      "grid": [{"min_child_samples": 1000}, {}, {"learning_rate": 0.3}]}}
    model, params, tried = tune_ranker(_ranking_data(0), _ranking_data(1), cfg, log=lambda m: None)
    assert [p for p, _ in tried] == cfg["ranker"]["grid"]
    best = max(range(3), key=lambda k: tried[k][1])
    assert params == tried[best][0]
    assert model.best_score_["valid_0"]["ndcg@10"] == tried[best][1]
    # a leaf needing 1000 of the 600 rows allows no split: constant scores rank worse than a learnt X[:, 0]
    assert tried[0][1] < tried[1][1] and params != tried[0][0]
    with pytest.raises(ValueError, match=r"\[.max_depth.\] are not tunable"):
        tune_ranker(_ranking_data(0), _ranking_data(1), dict(cfg, ranker=dict(cfg["ranker"], grid=[{"max_depth": 3}])))
