"""Profiles, tags, interests and segments on a real slice of the GA Merchandise Store log, with the real encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml import tags as T
from ml.embeddings import TextEncoder, embed_items, embedding_matrix
from ml.profiles import OVERALL_INTEREST, build_profiles, user_interests, user_vectors
from ml.segments import choose_k_and_cluster, plot_segments
from persona.config import DEFAULTS

GA_FILE = Path(__file__).resolve().parent.parent / "data/ga_merch_store/product_events_2016-08_2016-10.parquet"
CFG = DEFAULTS["profiles"]
AS_OF = pd.Timestamp("2016-08-15")
SLICE_END = pd.Timestamp("2016-08-22")


@pytest.fixture(scope="module")
def ga():
    from data_contracts.adapters import ga_merch

    r = ga_merch.load(GA_FILE)
    events = r.events.to_pandas()
    return events[events["ts"] < SLICE_END].reset_index(drop=True), r.items.to_pandas()


@pytest.fixture(scope="module")
def emb(ga):
    _, items = ga
    table, _ = embed_items(items, TextEncoder("bundled:all-MiniLM-L6-v2", device="cpu"))
    return embedding_matrix(table)


@pytest.fixture(scope="module")
def built(ga, emb):
    events, items = ga
    ids, matrix = emb
    return build_profiles(events, items, ids, matrix, AS_OF, CFG)


def _event(user, ts, event_type, item, **extra):
    row = {"event_id": f"t-{user}-{ts}-{event_type}-{item}", "user_id": user, "session_id": f"s-{user}",
           "ts": pd.Timestamp(ts), "event_type": event_type, "item_id": item, "price": np.nan}
    row.update(extra)
    return row


def test_one_profile_per_identified_user_before_cutoff(ga, built):
    events, _ = ga
    profiles, summary = built
    before = events[(events["ts"] < AS_OF) & events["user_id"].notna()]
    assert len(profiles) == before["user_id"].nunique() > 1000
    assert profiles["user_id"].is_unique
    assert (profiles["last_ts"] < AS_OF).all()
    vectors = np.vstack(profiles["vector"])
    assert vectors.shape == (len(profiles), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert set(profiles["price_band"].dropna()) <= set(T.PRICE_BANDS)
    assert set(profiles["activity_level"]) <= set(T.ACTIVITY_LEVELS)
    assert set(profiles["lifecycle_stage"]) <= set(T.LIFECYCLE_STAGES)
    assert summary["users"].sum() == len(profiles) and abs(summary["share"].sum() - 1) < 1e-9
    assert summary["description"].str.len().gt(20).all()


def test_events_at_or_after_cutoff_change_nothing(ga, emb, built):
    events, items = ga
    ids, matrix = emb
    profiles, _ = built
    user = profiles["user_id"].iloc[0]
    extra = pd.DataFrame([
        _event(user, AS_OF, "purchase", ids[-1], price=999.0),           # exactly at the cutoff
        _event(user, AS_OF + pd.Timedelta(days=1), "cart", ids[-2]),
        _event(None, AS_OF - pd.Timedelta(days=1), "purchase", ids[-3]),  # anonymous: never profiled
    ])
    only_before = events[events["ts"] < AS_OF]
    assert len(events) - len(only_before) > 1000  # the slice really has real future events
    for variant in (only_before, pd.concat([events, extra], ignore_index=True)):
        other, _ = build_profiles(variant, items, ids, matrix, AS_OF, CFG)
        assert other["user_id"].tolist() == profiles["user_id"].tolist()
        np.testing.assert_array_equal(np.vstack(other["vector"]), np.vstack(profiles["vector"]))
        assert other["tags"].tolist() == profiles["tags"].tolist()
        assert other["segment"].tolist() == profiles["segment"].tolist()
        assert other["purchase_intent"].tolist() == profiles["purchase_intent"].tolist()


def test_single_item_user_vector_is_the_item_embedding(ga, emb, built):
    events, _ = ga
    ids, matrix = emb
    profiles, _ = built
    before = events[events["ts"] < AS_OF]
    one_item = before.groupby("user_id")["item_id"].nunique()
    users = one_item[one_item == 1].index[:50]
    row_of = dict(zip(ids, range(len(ids))))
    by_user = profiles.set_index("user_id")
    for u in users:
        item = before.loc[before["user_id"] == u, "item_id"].iloc[0]
        assert float(np.dot(by_user.loc[u, "vector"], matrix[row_of[item]])) > 0.9999


def test_negative_weights_fallbacks_and_unknown_items(emb):
    ids, matrix = emb
    ev = pd.DataFrame([
        _event("removes-only", "2016-08-10", "remove_from_cart", ids[5]),
        _event("cart-then-remove", "2016-08-10", "cart", ids[5]),
        _event("cart-then-remove", "2016-08-11", "remove_from_cart", ids[6]),
        _event("unknown-item", "2016-08-10", "view", "NOT-IN-CATALOG"),
        _event("late", "2016-08-20", "view", ids[7]),
    ])
    users, vecs = user_vectors(ev, ids, matrix, AS_OF, CFG["event_weights"], CFG["half_life_days"])
    assert users == ["cart-then-remove", "removes-only", "unknown-item"]
    assert float(vecs[1] @ matrix[5]) > 0.9999          # negative-only -> plain mean of its item
    assert float(vecs[0] @ matrix[5]) > float(vecs[0] @ matrix[6])  # the removal pulls away
    assert float(vecs[0] @ matrix[6]) < float(matrix[5] @ matrix[6])
    assert not vecs[2].any()                             # nothing embedded -> zero vector, still a row


def test_lifecycle_rules_on_hand_made_timestamps():
    days = CFG["lifecycle_days"]  # new 14, active 14, at_risk 45
    as_of = pd.Timestamp("2016-10-01")
    d = lambda n: as_of - pd.Timedelta(days=n)  # noqa: E731
    cases = [  # (first, last, expected)
        (d(3), d(1), "new"),
        (d(14), d(14), "new"),            # boundary: exactly `new` days ago is still new
        (d(60), d(2), "active"),
        (d(60), d(14), "active"),
        (d(60), d(15), "at_risk"),
        (d(90), d(45), "at_risk"),
        (d(90), d(46), "lapsed"),
    ]
    got = T.lifecycle_stage([c[0] for c in cases], [c[1] for c in cases], as_of, days)
    assert list(got) == [c[2] for c in cases]
    assert T.lifecycle_stage(d(60), d(30), as_of, days) == "at_risk"


def test_price_activity_and_intent_rules(emb):
    assert T.price_tertiles([1, 2, 3, 4, 5, 6, 7, 8, 9, None, 0]) == pytest.approx((11 / 3, 19 / 3))
    assert list(T.price_band([1.0, 5.0, 9.0, np.nan], (3.0, 6.0))) == ["budget", "mid", "premium", None]
    assert list(T.activity_level([0, 1, 2, 3, 4, 5, 6, 0])) == \
        ["low", "low", "low", "medium", "medium", "high", "high", "low"]
    ids, matrix = emb
    items = pd.DataFrame({"item_id": ids[:3], "title": "t", "category_path": "Office", "brand": None,
                          "price": [1.0, 2.0, 3.0]})
    ev = pd.DataFrame([
        _event("carted", "2016-08-12", "cart", ids[0]),
        _event("bought", "2016-08-12", "cart", ids[1]),
        _event("bought", "2016-08-13", "purchase", ids[1]),
        _event("old-cart", "2016-08-01", "checkout", ids[2]),
        _event("viewer", "2016-08-14", "view", ids[2]),
    ])
    profiles, _ = build_profiles(ev, items, ids, matrix, AS_OF, CFG)
    intent = dict(zip(profiles["user_id"], profiles["purchase_intent"]))
    assert intent == {"bought": False, "carted": True, "old-cart": False, "viewer": False}
    by_user = profiles.set_index("user_id")
    assert T.INTENT_TAG in by_user.loc["carted", "tags"]
    assert T.INTENT_TAG not in by_user.loc["bought", "tags"] and T.INTENT_TAG not in by_user.loc["old-cart", "tags"]


def test_junk_categories_never_become_tags(ga, built, emb):
    for junk in (None, np.nan, "", "(not set)", "${escCatTitle}", "Home", "Home/(not set)/", "Shop by Brand/YouTube"):
        assert T.category_key(junk) is None, junk
    assert T.category_key("Home/Apparel/Men's/Men's-T-Shirts/") == "Apparel/Men's"
    assert T.clean_brand("(not set)") is None

    _, items = ga
    profiles, _ = built
    valid = {T.category_key(c) for c in items["category_path"]} - {None}
    cat_tags = {t.split(":", 1)[1] for tags in profiles["tags"] for t in tags if t.startswith("category:")}
    assert cat_tags and cat_tags <= valid
    assert not any(bad in t for tags in profiles["tags"] for t in tags for bad in ("None", "nan", "(not set)", "${"))

    ids, matrix = emb
    junk_items = pd.DataFrame({"item_id": ids[:3], "title": "t", "category_path": [None, "(not set)", "${escCatTitle}"],
                               "brand": [None, "(not set)", None], "price": 5.0})
    ev = pd.DataFrame([_event("u", "2016-08-10", "purchase", i) for i in ids[:3]])
    p, _ = build_profiles(ev, junk_items, ids, matrix, AS_OF, CFG)
    assert p.loc[0, "top_categories"] == [] and p.loc[0, "top_brands"] == []
    assert not any(t.startswith(("category:", "brand:")) for t in p.loc[0, "tags"])


def test_segments_on_real_data(built, tmp_path):
    profiles, summary = built
    k = profiles["segment"].nunique()
    assert CFG["k_min"] <= k <= CFG["k_max"]
    assert sorted(profiles["segment"].unique()) == list(range(k))
    sizes = profiles["segment"].value_counts().sort_index().to_numpy()
    assert (np.diff(sizes) <= 0).all()  # numbered by size
    assert len(summary) == k and all(len(t) > 0 for t in summary["top_tags"])
    plot = plot_segments(np.vstack(profiles["vector"]), profiles["segment"].to_numpy(), tmp_path / "seg.png")
    assert plot.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.legend_labels == [f"segment {s} ({n:,} users)" for s, n in enumerate(sizes)]
    assert plot.xlabel.startswith("PC1 (") and plot.ylabel.startswith("PC2 (")


def test_tiny_inputs_get_one_segment():
    X = np.eye(4, dtype=np.float32)[:2]
    labels, k, scores = choose_k_and_cluster(X, 3, 8, 100)
    assert k == 1 and labels.tolist() == [0, 0] and scores == {}
    labels, k, _ = choose_k_and_cluster(np.zeros((0, 4)), 3, 8, 100)
    assert k == 0 and len(labels) == 0


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_interest_vectors_per_category_with_shares_cap_and_fallbacks(emb):
    ids, matrix = emb
    items = pd.DataFrame({"item_id": ids[:6], "title": "t", "brand": None, "price": 5.0, "category_path": [
        "Home/Drinkware/Water Bottles", "Drinkware/Water Bottles/Steel", "Apparel/Men's/T-Shirts", "Office",
        "(not set)", "Unavailable"]})
    ts = AS_OF - pd.Timedelta(days=1)  # one timestamp: every decay factor is the same and cancels in the shares
    ev = pd.DataFrame([
        _event("multi", ts, "purchase", ids[0]), _event("multi", ts, "view", ids[1]),  # Drinkware/Water Bottles 5+1=6
        _event("multi", ts, "cart", ids[2]),                                          # Apparel/Men's 3
        _event("multi", ts, "view", ids[3]),                                          # Office 1
        _event("multi", ts, "purchase", ids[4]),                                      # junk category: no interest
        _event("junk-only", ts, "view", ids[4]), _event("junk-only", ts, "view", ids[5]),
        _event("net", ts, "cart", ids[3]), _event("net", ts, "remove_from_cart", ids[3]),  # Office 3-1=2
        _event("net", ts, "view", ids[2]),                                                 # Apparel/Men's 1
        _event("removed-only", ts, "remove_from_cart", ids[2]),                            # -1: not an interest
    ])
    got = user_interests(ev, items, ids, matrix, AS_OF, CFG)  # defaults: at most 3, min share 0.15
    rows = {(r.user_id, r.interest_rank): r for r in got.itertuples()}
    assert sorted(rows) == [("junk-only", 1), ("multi", 1), ("multi", 2), ("net", 1), ("net", 2), ("removed-only", 1)]
    # multi: shares 6/10, 3/10, 1/10 -> Office (0.1 < 0.15) dropped, kept weights rescaled: 6/9, 3/9
    assert [rows["multi", 1].label, rows["multi", 2].label] == ["Drinkware/Water Bottles", "Apparel/Men's"]
    assert [rows["multi", 1].weight, rows["multi", 2].weight] == pytest.approx([6 / 9, 3 / 9])
    assert [rows["multi", 1].n_items, rows["multi", 2].n_items] == [2, 1]
    np.testing.assert_allclose(rows["multi", 1].vector, _unit(5 * matrix[0] + 1 * matrix[1]), atol=1e-5)
    np.testing.assert_allclose(rows["multi", 2].vector, _unit(matrix[2]), atol=1e-5)
    # net: Office 2/3, Apparel/Men's 1/3
    assert [(rows["net", r].label, round(rows["net", r].weight, 6)) for r in (1, 2)] == \
        [("Office", round(2 / 3, 6)), ("Apparel/Men's", round(1 / 3, 6))]
    # junk-only and removed-only: one "overall" interest holding the profile vector
    users, V = user_vectors(ev, ids, matrix, AS_OF, CFG["event_weights"], CFG["half_life_days"])
    for u in ("junk-only", "removed-only"):
        assert (rows[u, 1].label, rows[u, 1].weight) == (OVERALL_INTEREST, 1.0)
        np.testing.assert_allclose(rows[u, 1].vector, V[users.index(u)], atol=1e-6)
    np.testing.assert_allclose(rows["junk-only", 1].vector, _unit(matrix[4] + matrix[5]), atol=1e-5)

    loose = user_interests(ev, items, ids, matrix, AS_OF, {**CFG, "interest_min_share": 0.0})
    multi = loose[loose["user_id"] == "multi"]
    assert multi["label"].tolist() == ["Drinkware/Water Bottles", "Apparel/Men's", "Office"]
    assert multi["weight"].tolist() == pytest.approx([0.6, 0.3, 0.1])
    capped = user_interests(ev, items, ids, matrix, AS_OF, {**CFG, "interest_min_share": 0.0, "max_interests": 1})
    assert capped.groupby("user_id").size().max() == 1 and (capped["weight"] == 1.0).all()
    with pytest.raises(ValueError, match="profiles.max_interests"):
        user_interests(ev, items, ids, matrix, AS_OF, {**CFG, "max_interests": 0})
    with pytest.raises(ValueError, match="profiles.interest_min_share"):
        user_interests(ev, items, ids, matrix, AS_OF, {**CFG, "interest_min_share": 1.5})


def test_interests_on_real_data_cover_every_profile_and_agree_with_top_category(ga, emb, built):
    events, items = ga
    ids, matrix = emb
    profiles, _ = built
    got = user_interests(events, items, ids, matrix, AS_OF, CFG)
    assert set(got["user_id"]) == set(profiles["user_id"])
    per_user = got.groupby("user_id")
    assert (per_user["interest_rank"].apply(lambda r: r.tolist() == list(range(1, len(r) + 1)))).all()
    assert per_user.size().max() <= CFG["max_interests"] and (per_user.size() >= 2).sum() > 100
    np.testing.assert_allclose(per_user["weight"].sum(), 1.0, atol=1e-9)
    valid = {T.category_key(c) for c in items["category_path"]} - {None}
    assert set(got["label"]) <= valid | {OVERALL_INTEREST}
    np.testing.assert_allclose(np.linalg.norm(np.vstack(got["vector"]), axis=1), 1.0, atol=1e-4)
    first = got[got["interest_rank"] == 1].set_index("user_id")["label"]
    top = profiles.set_index("user_id")["top_categories"]
    expected = top.map(lambda c: c[0] if len(c) else OVERALL_INTEREST)
    assert (first.reindex(expected.index) == expected).all()


def test_pipeline_every_profile_has_segment_lifecycle_tag_interest_and_the_asset_shows_the_map(pipeline_run):
    from persona.warehouse import read_df

    settings, result = pipeline_run
    db = settings.warehouse_path
    prof = read_df(db, "select snapshot, user_id, segment, lifecycle_stage, activity_level, tags from user_profiles")
    assert len(prof) > 1000
    assert prof["segment"].notna().all() and (prof["segment"] >= 0).all()
    assert set(prof["lifecycle_stage"]) <= set(T.LIFECYCLE_STAGES) and prof["lifecycle_stage"].notna().all()
    assert prof["tags"].map(len).min() >= 1
    assert all(f"lifecycle:{s}" in list(t) for s, t in zip(prof["lifecycle_stage"], prof["tags"]))
    assert not any(T.is_junk(t.split(":", 1)[1]) for tags in prof["tags"] for t in tags)

    interests = read_df(db, "select snapshot, user_id, interest_rank, label, weight from user_interests")
    assert set(zip(interests["snapshot"], interests["user_id"])) == set(zip(prof["snapshot"], prof["user_id"]))
    sums = interests.groupby(["snapshot", "user_id"])["weight"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-6)

    segments = read_df(db, "select snapshot, segment, users, top_tags, lifecycle_mix from user_segments")
    for snap, members in prof.groupby("snapshot"):
        seg = segments[segments["snapshot"] == snap].set_index("segment")["users"]
        assert seg.to_dict() == members["segment"].value_counts().to_dict()

    meta = result.asset_materializations_for_node("user_profiles")[-1].metadata
    assert meta["user_interests_rows"].value == len(interests)
    picture = meta["segment_map"].value
    assert "](data:image/png;base64," in picture and "segments_serving.png" in picture
    table = meta["segments"].value.splitlines()
    assert table[0] == "| segment | users | share | top tags | top categories | median price band | lifecycle mix |"
    assert len(table) == 2 + prof.loc[prof["snapshot"] == "serving", "segment"].nunique()
