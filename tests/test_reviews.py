"""Reviews: rating labels, review aggregates as of a cutoff, snapshot review features, the sentiment model on
real Amazon reviews, and review-text user vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.reviews import (LABELS, SentimentModel, distinct_reviews, out_of_fold_scores, rating_label,
                        review_aggregates, review_vectors, sentiment_table, temporal_split, train_and_evaluate)
from ml.snapshot import ITEM_FEATURES, USER_FEATURES, build_snapshot
from persona.config import load_settings

AMAZON = Path("/work/shared/datasets/amazon_fashion_reviews/AMAZON_FASHION_5.json.gz")
T = pd.Timestamp


def _events() -> pd.DataFrame:
    """Two users, two items, reviews around a cutoff of 2020-01-10 (plus one view that is not a review)."""
    rows = [
        # user, item, ts, type, rating, sentiment
        ("u1", "A", "2020-01-01", "review", 5.0, 0.8),
        ("u1", "B", "2020-01-02", "review", 2.0, -0.6),
        ("u2", "A", "2020-01-03", "review", 4.0, None),   # no score: counted, skipped by the sentiment mean
        ("u2", "A", "2020-01-04", "view", None, None),     # not a review
        ("u1", "A", "2020-01-10", "review", 1.0, -0.9),   # at the cutoff: excluded
        ("u2", "B", "2020-01-11", "review", 1.0, -0.9),   # after: excluded
    ]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "event_type", "rating", "sentiment"])
    df["ts"] = pd.to_datetime(df["ts"])
    df["session_id"] = df["user_id"] + "-s"
    df["price"] = np.nan
    return df


def test_rating_label_maps_one_two_stars_negative_three_neutral_four_five_positive():
    assert rating_label([1, 2, 3, 4, 5]).tolist() == [0, 0, 1, 2, 2]
    assert [LABELS[i] for i in rating_label([2, 3, 4])] == ["negative", "neutral", "positive"]


def test_rating_label_names_the_first_bad_row():
    with pytest.raises(ValueError, match=r"row 2: 6\.0"):
        rating_label([5, 4, 6, np.nan])


def test_review_aggregates_use_only_reviews_strictly_before_the_cutoff():
    ev = _events()
    users = review_aggregates(ev, T("2020-01-10"), "user_id")
    # u1: ratings 5, 2 -> mean 3.5; sentiments 0.8, -0.6 -> 0.1.  u2: one review, rating 4, no sentiment -> 0
    assert users.loc["u1"].tolist() == pytest.approx([2.0, 3.5, 0.1])
    assert users.loc["u2"].tolist() == pytest.approx([1.0, 4.0, 0.0])
    items = review_aggregates(ev, T("2020-01-10"), "item_id")
    # A: u1 5 (0.8) and u2 4 (no score) -> n 2, rating 4.5, sentiment 0.8.  B: u1 2 (-0.6)
    assert items.loc["A"].tolist() == pytest.approx([2.0, 4.5, 0.8])
    assert items.loc["B"].tolist() == pytest.approx([1.0, 2.0, -0.6])
    assert review_aggregates(ev, T("2020-01-01"), "user_id").empty  # nothing strictly before the first review


def test_snapshot_carries_the_review_aggregates_as_user_and_item_features():
    ev = _events()
    items = pd.DataFrame({"item_id": ["A", "B"], "category_path": ["x", "y"], "brand": [None, None],
                          "price": [10.0, 20.0]})
    cfg = load_settings(environ={}).data
    cfg = dict(cfg, candidates=dict(cfg["candidates"], als_factors=0))
    snap = build_snapshot(ev, items, ["A", "B"], np.eye(2, dtype=np.float32), [], np.zeros((0, 2), np.float32),
                          T("2020-01-10"), cfg)
    uf = lambda u, f: float(snap.user_feat[snap.user_index[u], USER_FEATURES.index(f)])  # noqa: E731
    itf = lambda i, f: float(snap.item_feat[snap.item_index[i], ITEM_FEATURES.index(f)])  # noqa: E731
    assert [uf("u1", f) for f in ("u_n_reviews", "u_mean_rating", "u_mean_sentiment")] == pytest.approx([2, 3.5, 0.1])
    assert [uf("u2", f) for f in ("u_n_reviews", "u_mean_rating", "u_mean_sentiment")] == pytest.approx([1, 4, 0])
    assert [itf("A", f) for f in ("it_n_reviews", "it_mean_rating", "it_mean_sentiment")] == pytest.approx([2, 4.5, 0.8])
    assert [itf("B", f) for f in ("it_n_reviews", "it_mean_rating", "it_mean_sentiment")] == pytest.approx([1, 2, -0.6])


def test_snapshot_review_features_are_zero_for_a_source_without_reviews():
    ev = _events()
    ev = ev.loc[ev["event_type"] != "review"].drop(columns=["rating", "sentiment"])  # e.g. GA: no such columns
    items = pd.DataFrame({"item_id": ["A"], "category_path": ["x"], "brand": [None], "price": [10.0]})
    cfg = load_settings(environ={}).data
    cfg = dict(cfg, candidates=dict(cfg["candidates"], als_factors=0))
    snap = build_snapshot(ev, items, ["A"], np.eye(1, dtype=np.float32), [], np.zeros((0, 1), np.float32),
                          T("2020-02-01"), cfg)
    cols_u = [USER_FEATURES.index(f) for f in ("u_n_reviews", "u_mean_rating", "u_mean_sentiment")]
    cols_i = [ITEM_FEATURES.index(f) for f in ("it_n_reviews", "it_mean_rating", "it_mean_sentiment")]
    assert not snap.user_feat[:, cols_u].any() and not snap.item_feat[:, cols_i].any()


def test_distinct_reviews_collapse_copies_posted_on_variant_listings():
    rev = pd.DataFrame({"user_id": ["u", "u", "u", "v"], "item_id": ["A", "B", "C", "A"],
                        "review_text": ["great", "great", "meh", "great"], "rating": [5.0, 5.0, 3.0, 5.0],
                        "ts": pd.to_datetime(["2020-01-03", "2020-01-01", "2020-01-02", "2020-01-04"])})
    d = distinct_reviews(rev)
    assert d[["user_id", "review_text", "n_copies"]].values.tolist() == [["u", "great", 2], ["u", "meh", 1],
                                                                         ["v", "great", 1]]
    assert d["ts"].iloc[0] == T("2020-01-01")  # dated by its first posting


def test_temporal_split_puts_the_latest_reviews_and_boundary_ties_in_test():
    ts = pd.Series(pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-03", "2020-01-04"]))
    test, boundary = temporal_split(ts, 0.4)
    assert boundary == T("2020-01-03") and test.tolist() == [False, False, True, True, True]


class _TableEncoder:
    """Deterministic stand-in for TextEncoder: a fixed vector per known word."""

    dim = 3
    spec = "table"
    max_length = 8
    VECS = {"love": [1, 0, 0], "hate": [0, 1, 0], "ok": [0, 0, 1]}

    def __init__(self):
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.array([self.VECS[t.split()[0]] for t in texts], dtype=np.float32)


def test_review_vectors_are_each_users_normalised_mean_review_embedding_before_the_cutoff():
    ev = pd.DataFrame({"user_id": ["u", "u", "u", "v", "v"], "event_type": ["review"] * 4 + ["view"],
                       "review_text": ["love", "hate", "ok", "love", None],
                       "ts": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-05", "2020-01-01", "2020-01-01"])})
    enc = _TableEncoder()
    users, M = review_vectors(ev, enc, as_of=T("2020-01-05"))
    assert users == ["u", "v"]
    assert M[0] == pytest.approx(np.array([1, 1, 0]) / np.sqrt(2))  # love + hate; "ok" is at the cutoff
    assert M[1] == pytest.approx([1, 0, 0])
    assert sorted(enc.calls[0]) == ["hate", "love"]  # identical texts encoded once


def test_sentiment_table_is_empty_for_a_source_without_reviews():
    ev = pd.DataFrame({"event_id": ["e1"], "user_id": ["u"], "ts": [T("2020-01-01")], "event_type": ["view"],
                       "rating": [np.nan], "review_text": [None]})
    table, report, model = sentiment_table(ev, encoder=None)
    assert table.empty and list(table.columns) == ["event_id", "sentiment"] and model is None
    assert report["n_reviews"] == 0


def test_sentiment_table_scores_every_copy_of_a_review_alike_by_its_text():
    rng = np.random.default_rng(0)
    rows = []
    for n in range(60):
        word, rating = [("love", 5.0), ("hate", 1.0), ("ok", 3.0)][n % 3]
        text = f"{word} {rng.integers(10**6)}"
        for item in ("A", "B"):  # the same review on two variant listings
            rows.append((f"e{n}{item}", f"user{n}", item, T("2020-01-01") + pd.Timedelta(days=n), "review", rating,
                         text))
    ev = pd.DataFrame(rows, columns=["event_id", "user_id", "item_id", "ts", "event_type", "rating", "review_text"])
    table, report, model = sentiment_table(ev, _TableEncoder())
    assert len(table) == 120 and report["n_distinct"] == 60
    s = dict(zip(table["event_id"], table["sentiment"]))
    assert s["e0A"] == s["e0B"] > 0.3 and s["e1A"] == s["e1B"] < -0.3  # love positive, hate negative
    assert report["held_out"]["accuracy"] == 1.0  # separable by construction


def test_out_of_fold_scores_never_use_the_reviews_own_label():
    # every review has its own private embedding dimension: only a model that saw the review can read its label
    ratings = np.array([5.0, 1.0] * 15)
    X = np.eye(30, dtype=np.float32)
    own = SentimentModel(C=10.0).fit(X, rating_label(ratings)).score(X)
    oof = out_of_fold_scores(X, ratings, groups=[f"u{i}" for i in range(30)], n_folds=5, C=10.0)
    assert np.all(np.sign(own) == np.where(ratings > 3, 1, -1))  # in-sample: echoes the rating
    assert np.abs(oof).max() < np.abs(own).min()  # out-of-fold: knows nothing about it


@pytest.fixture(scope="module")
def amazon_reviews():
    if not AMAZON.exists():
        pytest.skip("shared Amazon reviews dataset not present")
    from data_contracts.adapters import amazon_reviews
    from ml.reviews import review_rows

    ev = amazon_reviews.load(AMAZON).events.to_pandas()
    return distinct_reviews(review_rows(ev))


@pytest.fixture(scope="module")
def encoder():
    from ml.embeddings import TextEncoder
    from ml.reviews import REVIEW_MAX_LENGTH

    return TextEncoder("bundled:all-MiniLM-L6-v2", device="cpu", max_length=REVIEW_MAX_LENGTH)


def test_sentiment_model_beats_the_majority_class_on_later_amazon_reviews(amazon_reviews, encoder, tmp_path):
    d = amazon_reviews
    assert len(d) == 447  # 3,087 texted review events are copies of 447 distinct reviews
    X = encoder.encode(d["review_text"].tolist())
    model, r = train_and_evaluate(X, d["rating"], d["ts"], n_boot=500)
    assert r["n_train"] + r["n_test"] == 447 and r["majority_class"] == "positive"
    assert r["macro_f1"] > r["majority_macro_f1"] + 0.1
    assert r["macro_f1_gap_ci"][0] > 0  # the gain survives resampling the held-out reviews
    assert r["accuracy"] >= r["majority_accuracy"] - 0.05  # not bought by giving up the majority class

    path = model.save(tmp_path / "sentiment.joblib")
    loaded = SentimentModel.load(path)
    texts = ["Terrible quality, the sole fell off after two days. Returned it.",
             "Love these, perfect fit and very comfortable!"]
    s = loaded.score_texts(texts, encoder)
    assert s == pytest.approx(model.score(encoder.encode(texts)))
    assert s[0] < 0 < s[1]


def test_review_sentiment_asset_scores_each_review_event_and_load_events_joins_the_score(tmp_path):
    """The asset on a real slice (the 1,000 earliest Amazon review events) in a warehouse of its own."""
    if not AMAZON.exists():
        pytest.skip("shared Amazon reviews dataset not present")
    import duckdb
    from dagster import materialize

    from data_contracts.adapters import amazon_reviews
    from orchestration.assets.common import load_events
    from orchestration.assets.reviews import review_sentiment
    from orchestration.resources import PersonaConfig, Warehouse
    from tests.conftest import write_config

    ev = amazon_reviews.load(AMAZON).events.to_pandas().sort_values(["ts", "event_id"]).head(1000)
    config = write_config(tmp_path, AMAZON, source__adapter="amazon_reviews")
    settings = load_settings(config)
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.register("ev", ev)
        con.execute("create table fct_events as select * from ev")
    result = materialize([review_sentiment], resources={"persona": PersonaConfig(config_file=str(config)),
                                                        "warehouse": Warehouse()})
    assert result.success
    events = load_events(Warehouse(), settings)
    rev = events.loc[events["event_type"] == "review"]
    assert len(rev) == 1000 and rev["sentiment"].between(-1, 1).all()  # every review here has text
    mean = rev.groupby(rating_label(rev["rating"]))["sentiment"].mean()
    assert mean[0] < mean[2]  # out-of-fold scores still separate negative from positive reviews
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        scores_per_review = con.sql("select count(distinct s.sentiment) n from fct_events e join review_sentiment s "
                                    "using (event_id) group by e.user_id, e.review_text").df()["n"]
    assert len(scores_per_review) > 0 and (scores_per_review == 1).all()  # one score per review, however many copies
    assert SentimentModel.load(settings.artifacts_dir / "reviews" / "sentiment_model.joblib").clf is not None
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        uv = con.sql("select user_id, n_review_texts, vector from user_review_vectors order by user_id").df()
    texted = ev.loc[ev["review_text"].notna()].groupby("user_id").size()
    assert uv["user_id"].tolist() == sorted(texted.index) and uv["n_review_texts"].tolist() == texted.sort_index().tolist()
    assert np.allclose(np.linalg.norm(np.stack(uv["vector"]), axis=1), 1.0, atol=1e-5)


def test_loading_something_that_is_not_a_sentiment_model_names_the_file(tmp_path):
    import joblib

    bad = tmp_path / "x.joblib"
    joblib.dump({"hello": 1}, bad)
    with pytest.raises(ValueError, match="x.joblib"):
        SentimentModel.load(bad)
    with pytest.raises(FileNotFoundError, match="missing.joblib"):
        SentimentModel.load(tmp_path / "missing.joblib")


@pytest.mark.slow
def test_on_ga_the_sentiment_table_is_empty_and_the_review_features_are_constant_zero(pipeline_run):
    from ml import registry
    from ml.snapshot import Snapshot
    from persona.warehouse import read_df

    settings, result = pipeline_run
    assert result.success
    assert read_df(settings.warehouse_path, "select count(*) n from review_sentiment")["n"].iloc[0] == 0
    snap = Snapshot.load(registry.champion_dir(settings.models_dir) / "snapshot")
    cols_u = [USER_FEATURES.index(f) for f in ("u_n_reviews", "u_mean_rating", "u_mean_sentiment")]
    cols_i = [ITEM_FEATURES.index(f) for f in ("it_n_reviews", "it_mean_rating", "it_mean_sentiment")]
    assert len(snap.user_ids) > 100 and not snap.user_feat[:, cols_u].any() and not snap.item_feat[:, cols_i].any()
