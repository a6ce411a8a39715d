"""The retraining rule shared by the sensor and the replay."""

import math

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
