"""Coverage, popularity bias and the new-items-only view, on hand-made lists."""

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
