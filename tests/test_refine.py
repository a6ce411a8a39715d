"""Two-tower refinement: examples built from history before each session, the untrained model equals the
unrefined profile, and training learns a behaviour pattern text similarity cannot see."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml import evaluation as E
from ml import refine as R
from ml.fusion import structured_codes
from ml.profiles import user_vectors

WEIGHTS = R.DEFAULT_EVENT_WEIGHTS
VOCAB = R.type_vocabulary(WEIGHTS)
BUCKETS = 256


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: on a shared 2-core machine thread hand-offs cost more than they save."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _ev(user, session, ts, event_type, item):
    return {"user_id": user, "session_id": session, "ts": pd.Timestamp(ts), "event_type": event_type, "item_id": item}


def test_examples_take_history_from_before_the_target_session_only():
    events = pd.DataFrame([
        _ev("u", "s1", "2024-01-01 10:00", "view", "A"),
        _ev("u", "s1", "2024-01-01 10:05", "view", "B"),
        _ev("u", "s2", "2024-01-03 10:00", "view", "C"),
        _ev("u", "s2", "2024-01-03 10:01", "cart", "C"),
        _ev("u", "s2", "2024-01-03 10:02", "cart", "A"),
        _ev("u", "s2", "2024-01-03 10:03", "cart", "A"),       # same (session, item): counted once
        _ev("u", "s1", "2024-01-01 10:06", "cart", "B"),       # first session: no history, no example
        _ev("u", "s3", "2024-01-09 00:00", "cart", "B"),       # at the cutoff: never seen
    ])
    ids = ["A", "B", "C"]
    prep = R.prepare(events, ids, "2024-01-09", ["cart"], VOCAB)
    hist, targets = R.training_examples(prep, L=4)
    assert sorted(targets.tolist()) == [0, 2]                # A and C, from session s2
    assert hist.length.tolist() == [3, 3]                    # view A, view B, cart B of s1
    assert hist.items[0, :3].tolist() == [0, 1, 1]
    assert [VOCAB[t] for t in hist.types[0, :3]] == ["view", "view", "cart"]
    # ages in days from the start of s2 (2024-01-03 10:00)
    assert np.allclose(hist.age[0, :3], [2.0, 2.0 - 5 / 1440, 2.0 - 6 / 1440], atol=1e-5)
    assert hist.items[0, 3] == 0 and hist.age[0, 3] == 0.0   # padding


def _synthetic(n_users=240, n_cats=6, per_cat=8, dim=16, seed=0):
    """Users view items of one category, then buy in the *next* category (c -> c+1): behaviour, not text.

    Text vectors are random per item, so the unrefined profile (mean of viewed items' text) points at
    category c and misses every target; the category code is in the structured features.
    """
    rng = np.random.default_rng(seed)
    n_items = n_cats * per_cat
    ids = [f"i{k:03d}" for k in range(n_items)]
    items = pd.DataFrame({"item_id": ids, "category_path": [f"Cat{k // per_cat}" for k in range(n_items)],
                          "brand": "Acme", "price": 10.0})
    text = rng.normal(size=(n_items, dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    t0 = pd.Timestamp("2024-01-01")
    rows = []
    for u in range(n_users):
        c = u % n_cats
        nxt = (c + 1) % n_cats
        day = t0 + pd.Timedelta(days=int(rng.integers(0, 20)))
        for k, i in enumerate(rng.choice(per_cat, 3, replace=False)):
            rows.append(_ev(f"u{u}", f"u{u}-a", day + pd.Timedelta(minutes=k), "view", ids[c * per_cat + i]))
        # the session after: the target, before the cutoff for training, after it for held-out users
        when = day + pd.Timedelta(days=1) if u % 4 else pd.Timestamp("2024-02-02")
        for k, i in enumerate(rng.choice(per_cat, 2, replace=False)):
            rows.append(_ev(f"u{u}", f"u{u}-b", when + pd.Timedelta(minutes=k), "cart", ids[nxt * per_cat + i]))
    events = pd.DataFrame(rows).sort_values("ts").reset_index(drop=True)
    return events, items, ids, text


CUTOFF = pd.Timestamp("2024-02-01")


def _heldout(events):
    after = events[(events["ts"] >= CUTOFF) & (events["event_type"] == "cart")]
    return {u: set(g["item_id"]) for u, g in after.groupby("user_id")}


def test_two_tower_learns_a_pattern_text_similarity_cannot_see():
    events, items, ids, text = _synthetic()
    held = _heldout(events)
    k = 8
    cfg = R.RefineConfig(item_tower="fused", user_tower="attention", epochs=10, batch_size=32, lr=1e-2,
                         temperature=0.1, max_history=10, n_buckets=BUCKETS, device="cpu", seed=0)
    refined = R.train(events, ids, text, CUTOFF, ["cart"], cfg, codes=structured_codes(items, n_buckets=BUCKETS),
                      progress=False)
    lists = R.refined_lists(refined, events, ids, CUTOFF, list(held), k=k)
    recall = E.per_user_metrics({u: l[:k] for u, l in lists.items()}, held)["recall@20"].mean()
    base = R.unrefined_lists(events, ids, text, CUTOFF, list(held), WEIGHTS, 14.0, k=k)
    base_recall = E.per_user_metrics(base, held)["recall@20"].mean()
    random_recall = k / len(ids)  # 8 of 48 items: 0.167
    assert len(held) == 60
    assert base_recall < 0.25                     # text neighbours of category c say nothing about c + 1
    assert recall > 0.8 > 3 * random_recall       # the model learned "c -> c + 1" from behaviour
    assert refined.losses[-1] < refined.losses[0]


def test_untrained_model_reproduces_the_unrefined_profile_vector():
    events, _, ids, text = _synthetic(n_users=30)
    cfg = R.RefineConfig(item_tower="text", epochs=0, batch_size=8, max_history=50, device="cpu")
    refined = R.train(events, ids, text, CUTOFF, ["cart"], cfg, progress=False)
    prep = R.prepare(events, ids, CUTOFF, [], refined.type_names)
    users, hist = R.cutoff_histories(prep, sorted(events["user_id"].unique()), 50)
    mine = refined.user_matrix(hist)
    uids, theirs = user_vectors(events, ids, text, CUTOFF, WEIGHTS, 14.0)
    assert uids == users
    assert np.allclose(mine, theirs, atol=1e-5)


def test_training_is_deterministic_for_a_seed():
    events, items, ids, text = _synthetic(n_users=60)
    cfg = R.RefineConfig(item_tower="fused", user_tower="gru", epochs=2, batch_size=16, n_buckets=BUCKETS,
                         device="cpu", seed=3)
    codes = structured_codes(items, n_buckets=BUCKETS)
    a = R.train(events, ids, text, CUTOFF, ["cart"], cfg, codes=codes, progress=False)
    b = R.train(events, ids, text, CUTOFF, ["cart"], cfg, codes=codes, progress=False)
    assert a.losses == b.losses
    assert np.array_equal(a.item_matrix(), b.item_matrix())


def test_too_little_behaviour_is_a_clear_error():
    events, _, ids, text = _synthetic(n_users=4)
    with pytest.raises(ValueError, match=r"only \d+ training examples before 2024-02-01"):
        R.train(events, ids, text, CUTOFF, ["cart"], R.RefineConfig(batch_size=256, device="cpu"), progress=False)


def test_unknown_tower_names_are_rejected():
    with pytest.raises(ValueError, match="item_tower must be 'text' or 'fused'"):
        R.RefineConfig(item_tower="image")
    with pytest.raises(ValueError, match="user_tower must be 'attention' or 'gru'"):
        R.RefineConfig(user_tower="transformer")
