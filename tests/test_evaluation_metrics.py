"""Metric functions against hand-computed values, including the edge cases."""

import math

import numpy as np
import pytest

from ml.evaluation import bootstrap_ci, hit_rate_at_k, mrr_at_k, ndcg_at_k, paired_difference, recall_at_k


def test_ndcg_of_a_single_hit_at_rank_three():
    # DCG = 1/log2(3+1) = 0.5; ideal with one relevant item = 1
    assert ndcg_at_k(["a", "b", "c"], {"c"}, 10) == pytest.approx(0.5)


def test_ndcg_with_two_relevant_items_hand_computed():
    dcg = 1 / math.log2(2) + 1 / math.log2(4)       # hits at ranks 1 and 3
    idcg = 1 / math.log2(2) + 1 / math.log2(3)      # ideal: ranks 1 and 2
    assert ndcg_at_k(["x", "n", "y", "m"], {"x", "y"}, 10) == pytest.approx(dcg / idcg)


def test_no_relevant_items_scores_zero_everywhere():
    for fn in (ndcg_at_k, recall_at_k, mrr_at_k, hit_rate_at_k):
        assert fn(["a", "b"], set(), 10) == 0.0


def test_k_larger_than_the_list_uses_what_is_there():
    assert recall_at_k(["a", "b"], {"b", "z"}, 20) == pytest.approx(0.5)
    assert mrr_at_k(["a", "b"], {"b"}, 20) == pytest.approx(0.5)
    # ideal DCG is over min(|rel|, k) = 2 positions even though the list is shorter than k
    assert ndcg_at_k(["b"], {"b", "z"}, 20) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_hits_beyond_k_do_not_count():
    ranked = [f"i{j}" for j in range(30)]
    assert ndcg_at_k(ranked, {"i10"}, 10) == 0.0
    assert recall_at_k(ranked, {"i19", "i20"}, 20) == pytest.approx(0.5)
    assert mrr_at_k(ranked, {"i25"}, 20) == 0.0
    assert hit_rate_at_k(ranked, {"i9"}, 10) == 1.0


def test_tied_duplicates_in_a_list_count_once_for_recall():
    assert recall_at_k(["a", "a", "b"], {"a"}, 20) == 1.0


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_users():
    rng = np.random.default_rng(0)
    small, large = rng.random(50), rng.random(5000)
    lo_s, hi_s = bootstrap_ci(small, 500, 1)
    lo_l, hi_l = bootstrap_ci(large, 500, 1)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < hi_s - lo_s


def test_paired_difference_of_identical_arrays_is_exactly_zero():
    v = np.linspace(0, 1, 40)
    d = paired_difference(v, v, 200, 0)
    assert d["mean"] == 0.0 and d["ci"] == [0.0, 0.0]
