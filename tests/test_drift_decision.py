"""The retraining rule shared by the sensor and the replay."""

import math

import pytest

from ml.monitoring import retrain_decision


def test_drift_share_or_ndcg_drop_triggers_and_nothing_else_does():
    kw = {"share_threshold": 0.3, "ndcg_drop": 0.05}
    assert not retrain_decision(0.29, 0.30, 0.32, **kw).retrain
    d = retrain_decision(0.30, 0.30, 0.30, **kw)
    assert d.retrain and d.reasons == ["drift share 0.30 >= 0.30"]
    d = retrain_decision(0.0, 0.25, 0.31, **kw)
    assert d.retrain and "fell by 0.0600" in d.reasons[0]
    assert len(retrain_decision(0.5, 0.2, 0.3, **kw).reasons) == 2
    assert not retrain_decision(None, math.nan, 0.3, **kw).retrain  # no labelled users in the window
    assert not retrain_decision(0.1, 0.40, 0.30, **kw).retrain     # better than at training time


def _grid_rows(n: int = 2000, **shifts: float):
    """Every feature = the same uniform grid on [0, 1]; named features shifted by a constant. Between two such
    samples the Wasserstein distance is exactly the shift difference, normed by the grid's std (1/sqrt(12))."""
    import numpy as np

    from ml.features import FEATURES

    X = np.tile(np.linspace(0.0, 1.0, n)[:, None], (1, len(FEATURES)))
    for name, shift in shifts.items():
        X[:, FEATURES.index(name)] += shift
    return X


def test_a_feature_counts_as_drifted_only_beyond_twice_its_natural_movement():
    import numpy as np
    import pytest

    from ml.features import FEATURES
    from ml.monitoring import feature_drift

    std = float(np.std(np.linspace(0.0, 1.0, 2000)))
    # it_age_days moves 0.1 per window on its own (training windows -> reference), and again 0.1 now;
    # it_price never moved and now shifts by 0.05; price_ratio shifts by 0.02 (below the 0.1 column threshold)
    baseline = _grid_rows(it_age_days=-0.1)
    reference = _grid_rows()
    current = _grid_rows(it_age_days=0.1, it_price=0.05, price_ratio=0.02)
    for X in (baseline, reference, current):  # a feature this shop does not have: constant, left out of the share
        X[:, FEATURES.index("u_n_carts")] = 0.0
    res = feature_drift(reference, current, baseline_X=baseline, natural_scale=1.0, column_threshold=0.1,
                        natural_factor=2.0)
    age, price, ratio = (res.columns[c] for c in ("it_age_days", "it_price", "price_ratio"))
    assert age["score"] == pytest.approx(0.1 / std, rel=1e-6) and age["natural"] == pytest.approx(0.1 / std, rel=1e-6)
    assert age["threshold"] == pytest.approx(2 * 0.1 / std, rel=1e-6) and not age["drifted"]
    assert price["score"] == pytest.approx(0.05 / std, rel=1e-6) and price["threshold"] == pytest.approx(0.1)
    assert price["drifted"] and not ratio["drifted"]
    assert "u_n_carts" not in res.columns and res.n_columns == len(FEATURES) - 1
    assert res.drifted_columns == ["it_price"] and res.share_drifted == pytest.approx(1 / (len(FEATURES) - 1))
    assert all(info["method"] == "wasserstein" for info in res.columns.values())
    # without the champion's training windows the fixed column threshold alone decides: the age column counts
    plain = feature_drift(reference, current, column_threshold=0.1)
    assert sorted(plain.drifted_columns) == ["it_age_days", "it_price"] and "natural" not in plain.columns["it_price"]
    assert "| natural |" in res.to_markdown()
    # no time elapsed since the validated window: time explains nothing, the column threshold alone decides
    now = feature_drift(reference, current, baseline_X=baseline, natural_scale=0.0, column_threshold=0.1)
    assert sorted(now.drifted_columns) == ["it_age_days", "it_price"]


def test_natural_scale_is_elapsed_time_over_the_mean_training_offset():
    from ml.monitoring import natural_scale

    split = {"train": [{"start": "2016-09-01"}, {"start": "2016-09-08"}, {"start": "2016-09-15"}],
             "test": {"start": "2016-09-29"}}  # offsets 28, 21, 14 days: mean 21
    assert natural_scale(split, "2016-09-29") == 0.0
    assert natural_scale(split, "2016-10-06") == pytest.approx(7 / 21)
    assert natural_scale(split, "2016-10-20") == pytest.approx(1.0)
    assert natural_scale(split, "2016-09-20") == 0.0  # a window before the validated one: no elapsed time


def test_replay_windows_follow_the_step_length():
    from ml.replay import replay_config
    from persona.config import load_settings

    settings = load_settings()
    weekly = replay_config(settings, 7)["split"]
    assert (weekly["test_days"], weekly["valid_days"], weekly["train_days"], weekly["train_windows"]) == (7, 7, 7, 3)
    monthly = replay_config(settings, 30)["split"]
    assert (monthly["test_days"], monthly["valid_days"], monthly["train_days"]) == (30, 30, 30)
    assert monthly["train_windows"] == 3


def test_natural_movement_below_the_column_threshold_is_noise_and_earns_no_allowance():
    from ml.monitoring import column_threshold_for

    # a feature that moved 0.05 between the champion's training and validated windows: sampling noise, so the
    # plain 0.1 holds however old the champion is (scale 3: three times the training offsets have passed)
    assert column_threshold_for(0.05, 3.0, 0.1, 2.0) == 0.1
    assert column_threshold_for(0.0, 3.0, 0.1, 2.0) == 0.1
    # a feature that counts time (moved 0.5): twice the part of its movement the elapsed time explains
    assert column_threshold_for(0.5, 1 / 3, 0.1, 2.0) == pytest.approx(1 / 3)
    assert column_threshold_for(0.5, 3.0, 0.1, 2.0) == pytest.approx(3.0)
    # just after the validated window the allowance is small and the plain threshold decides
    assert column_threshold_for(0.5, 0.05, 0.1, 2.0) == 0.1


def test_run_summary_prints_the_champion_monitors_decision_not_only_the_plain_share():
    from persona.cli import monitor_line

    latest = {"decision": {"retrain": True, "reasons": ["drift share 0.29 >= 0.20"], "ndcg_now": 0.31,
                           "ndcg_champion": 0.34},
              "feature_drift": {"n_drifted": 12, "n_columns": 42}}
    assert monitor_line(latest) == ("retrain trigger     YES: 12/42 features beyond their natural movement, NDCG@10 "
                                    "0.3100 vs champion 0.3400 (drift share 0.29 >= 0.20)")
    assert monitor_line(None) is None and monitor_line({"champion": "v1"}) is None
