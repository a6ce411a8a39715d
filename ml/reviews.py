"""Reviews: a sentiment model trained on the shop's own ratings, review aggregates, review-text user vectors.

Why ratings as labels: a review's star rating is the reviewer's own verdict on the text, so every review is
a labelled example and no annotation is needed. Labels: negative = 1-2 stars, neutral = 3, positive = 4-5
(three classes: a 3-star review is a real, frequent outcome - 10% of AMAZON_FASHION_5 - and dropping it would
leave the model unable to say "lukewarm"). Input: the review text's sentence embedding (the bundled MiniLM,
`ml.embeddings.TextEncoder`); classifier: scikit-learn's LogisticRegression (multinomial, class-balanced so
the rare negative class is not ignored).

The sentiment *score* of a review is P(positive) - P(negative), in [-1, 1]; 0 is neutral. Aggregates over a
user's or an item's reviews use 0 (neutral) and a mean rating of 0 (no stars) when there are none, so a
user unseen at training time (serving's zero feature row) means exactly "no reviews".

sklearn and joblib are imported inside the functions that need them: `ml.snapshot` imports
`review_aggregates` and serving must stay light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

LABELS = ["negative", "neutral", "positive"]
REVIEW_FEATURES = ["n_reviews", "mean_rating", "mean_sentiment"]
REVIEW_MAX_LENGTH = 128  # tokens: covers ~90% of AMAZON_FASHION_5 texts whole (median 81 characters)
FORMAT_VERSION = 1


def rating_label(rating) -> np.ndarray:
    """1-2 stars -> 0 (negative), 3 -> 1 (neutral), 4-5 -> 2 (positive); a rating outside 1..5 is an error."""
    r = np.asarray(rating, dtype=np.float64)
    bad = np.isnan(r) | (r < 1) | (r > 5)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"rating: {int(bad.sum())} value(s) outside 1..5 or missing (first at row {i}: {float(r[i])})")
    return np.where(r < 2.5, 0, np.where(r < 3.5, 1, 2)).astype(np.int64)


def review_rows(events: pd.DataFrame) -> pd.DataFrame:
    """Review events that carry a text and a rating, in time order (the training and scoring population)."""
    missing = [c for c in ("event_type", "ts", "rating", "review_text") if c not in events.columns]
    if missing:
        raise ValueError(f"events: missing column(s) {missing} needed for reviews")
    rev = events.loc[(events["event_type"] == "review") & events["review_text"].notna() & events["rating"].notna()]
    rev = rev.loc[rev["review_text"].astype(str).str.strip() != ""]
    return rev.sort_values("ts", kind="stable").reset_index(drop=True)


def distinct_reviews(reviews: pd.DataFrame) -> pd.DataFrame:
    """One row per (user, text, rating), dated by its first posting: the unit for training and evaluation.

    Why: marketplaces copy a review onto every variant listing of a product. AMAZON_FASHION_5 has 3,087 texted
    review events but only 447 distinct reviews (most posted on 8 listings); counting copies would weight an
    opinion 8 times and put copies of a training review into the test set.
    """
    key = ["user_id", "review_text", "rating"]
    out = (reviews.assign(_n=1).groupby(key, as_index=False, dropna=False, sort=False)
           .agg(ts=("ts", "min"), n_copies=("_n", "sum")))
    return out.sort_values(["ts", "user_id"], kind="stable").reset_index(drop=True)


def temporal_split(ts: pd.Series, test_frac: float = 0.2) -> tuple[np.ndarray, pd.Timestamp]:
    """Boolean test mask = reviews at or after the time that leaves `test_frac` of them for testing.

    By time, not at random: the model is used on reviews written after it was trained, and an item's or a
    fashion season's wording must not leak from the future into training. Ties at the boundary go to test.
    """
    if not 0 < test_frac < 1:
        raise ValueError(f"test_frac must be in (0, 1), got {test_frac}")
    t = pd.to_datetime(ts).reset_index(drop=True)
    boundary = t.sort_values(kind="stable").iloc[int(len(t) * (1 - test_frac))]
    return (t >= boundary).to_numpy(), pd.Timestamp(boundary)


@dataclass
class SentimentModel:
    """LogisticRegression over text embeddings; knows its encoder so saved models score raw text."""

    encoder: str = "bundled:all-MiniLM-L6-v2"
    max_length: int = REVIEW_MAX_LENGTH
    C: float = 1.0
    classes: list[str] = field(default_factory=lambda: list(LABELS))
    clf: object = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> "SentimentModel":
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(y)
        if len(np.unique(y)) < 2:
            raise ValueError(f"sentiment training needs at least two classes, got only {np.unique(y).tolist()}")
        self.clf = LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000)
        self.clf.fit(np.asarray(X, dtype=np.float64), y)
        return self

    def proba(self, X: np.ndarray) -> np.ndarray:
        """(n, 3) probabilities in LABELS order (a class absent from training gets 0)."""
        if self.clf is None:
            raise RuntimeError("SentimentModel is not fitted")
        p = self.clf.predict_proba(np.asarray(X, dtype=np.float64))
        out = np.zeros((len(p), len(LABELS)))
        out[:, self.clf.classes_.astype(int)] = p
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.proba(X).argmax(axis=1)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Sentiment in [-1, 1]: P(positive) - P(negative)."""
        p = self.proba(X)
        return (p[:, 2] - p[:, 0]).astype(np.float32)

    def score_texts(self, texts: list[str], encoder=None) -> np.ndarray:
        """Sentiment of raw texts; builds this model's encoder unless one is given."""
        if encoder is None:
            from ml.embeddings import TextEncoder

            encoder = TextEncoder(self.encoder, max_length=self.max_length)
        return self.score(encoder.encode(list(texts)))

    def save(self, path: str | Path) -> Path:
        import joblib
        import sklearn

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump({"format": FORMAT_VERSION, "sklearn": sklearn.__version__, "encoder": self.encoder,
                     "max_length": self.max_length, "C": self.C, "classes": self.classes, "clf": self.clf}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SentimentModel":
        import joblib

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"sentiment model {path}: no such file")
        d = joblib.load(path)
        if not isinstance(d, dict) or d.get("format") != FORMAT_VERSION:
            raise ValueError(f"sentiment model {path}: not a format-{FORMAT_VERSION} SentimentModel file")
        return cls(encoder=d["encoder"], max_length=d["max_length"], C=d["C"], classes=d["classes"], clf=d["clf"])


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, y_train: np.ndarray) -> dict:
    """Accuracy, macro-F1 and confusion matrix, next to the majority-class baseline (majority of *train*)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    labels = list(range(len(LABELS)))
    majority = int(np.bincount(np.asarray(y_train), minlength=len(LABELS)).argmax())
    base = np.full(len(y_true), majority)
    return {
        "n_test": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "majority_class": LABELS[majority],
        "majority_accuracy": float(accuracy_score(y_true, base)),
        "majority_macro_f1": float(f1_score(y_true, base, labels=labels, average="macro", zero_division=0)),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "test_counts": np.bincount(np.asarray(y_true), minlength=len(LABELS)).tolist(),
    }


C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def select_C(X: np.ndarray, y: np.ndarray, ts: pd.Series, grid=C_GRID, valid_frac: float = 0.2) -> tuple[float, dict]:
    """Regularisation chosen by macro-F1 on the latest `valid_frac` of the *training* reviews (never the test)."""
    from sklearn.metrics import f1_score

    valid, _ = temporal_split(ts, valid_frac)
    if len(np.unique(y[~valid])) < 2:
        return 1.0, {}
    scores = {}
    for C in grid:
        pred = SentimentModel(C=C).fit(X[~valid], y[~valid]).predict(X[valid])
        scores[C] = float(f1_score(y[valid], pred, labels=list(range(len(LABELS))), average="macro", zero_division=0))
    best = max(grid, key=lambda c: (scores[c], -c))  # ties -> the stronger regularisation
    return float(best), scores


def bootstrap_gap(y_true: np.ndarray, y_pred: np.ndarray, majority: int, n_boot: int = 2000,
                  seed: int = 0) -> dict:
    """95% bootstrap intervals (test rows resampled) of model - majority for accuracy and macro-F1."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    labels = list(range(len(LABELS)))
    base = np.full(len(y_true), majority)
    acc, f1 = [], []
    for _ in range(n_boot):
        i = rng.integers(0, len(y_true), len(y_true))
        acc.append((y_pred[i] == y_true[i]).mean() - (base[i] == y_true[i]).mean())
        f1.append(f1_score(y_true[i], y_pred[i], labels=labels, average="macro", zero_division=0)
                  - f1_score(y_true[i], base[i], labels=labels, average="macro", zero_division=0))
    q = lambda v: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]  # noqa: E731
    return {"accuracy_gap_ci": q(acc), "macro_f1_gap_ci": q(f1)}


def train_and_evaluate(X: np.ndarray, ratings, ts: pd.Series, test_frac: float = 0.2, C: float | None = None,
                       encoder: str = "bundled:all-MiniLM-L6-v2", max_length: int = REVIEW_MAX_LENGTH,
                       n_boot: int = 2000) -> tuple[SentimentModel, dict]:
    """Fit on the earlier reviews, evaluate on the later ones (temporal hold-out). Returns (model, report).

    C=None picks the regularisation on a temporal validation slice of the training part (`select_C`).
    """
    y = rating_label(ratings)
    ts = pd.Series(pd.to_datetime(ts)).reset_index(drop=True)
    test, boundary = temporal_split(ts, test_frac)
    c_scores = {}
    if C is None:
        C, c_scores = select_C(X[~test], y[~test], ts[~test])
    model = SentimentModel(encoder=encoder, max_length=max_length, C=C).fit(X[~test], y[~test])
    pred = model.predict(X[test])
    report = evaluate(y[test], pred, y[~test])
    if n_boot:
        report.update(bootstrap_gap(y[test], pred, LABELS.index(report["majority_class"]), n_boot))
    report.update(n_train=int((~test).sum()), split="time", test_from=str(boundary),
                  train_counts=np.bincount(y[~test], minlength=len(LABELS)).tolist(), labels=LABELS,
                  label_rule="1-2 stars negative, 3 neutral, 4-5 positive", C=C,
                  C_validation_macro_f1={str(k): v for k, v in c_scores.items()})
    return model, report


def out_of_fold_scores(X: np.ndarray, ratings, groups, n_folds: int = 5, C: float = 1.0) -> np.ndarray:
    """Each review's sentiment from a model trained on other users' reviews only (GroupKFold by user).

    Why: a score from a model that saw the review's own rating would just echo the rating (already a feature);
    out-of-fold scores say what the *text* says, as they would for a new review.
    """
    from sklearn.model_selection import GroupKFold

    y = rating_label(ratings)
    groups = np.asarray(pd.Series(groups).astype(str))
    out = np.zeros(len(y), dtype=np.float32)
    k = min(n_folds, len(np.unique(groups)))
    if k < 2 or len(np.unique(y)) < 2:
        raise ValueError(f"out-of-fold sentiment needs >= 2 users and >= 2 rating classes "
                         f"(got {len(np.unique(groups))} users, classes {np.unique(y).tolist()})")
    for train, test in GroupKFold(n_splits=k).split(X, y, groups):
        if len(np.unique(y[train])) < 2:
            continue  # this fold's training users all gave one class: leave its reviews neutral (0)
        out[test] = SentimentModel(C=C).fit(X[train], y[train]).score(X[test])
    return out


def review_aggregates(events: pd.DataFrame, as_of, key: str) -> pd.DataFrame:
    """Per `key` (user_id or item_id): n_reviews, mean_rating, mean_sentiment over reviews strictly before as_of.

    Reviews without a rating still count in n_reviews; the means skip missing values; a key whose reviews
    have no rating / no score gets 0 (= unknown, see the module docstring). `sentiment` is optional.
    """
    cols = ["n_reviews", "mean_rating", "mean_sentiment"]
    if "event_type" not in events.columns or key not in events.columns:
        raise ValueError(f"events: review aggregates need columns event_type and {key!r}")
    rev = events.loc[(events["event_type"] == "review") & (events["ts"] < pd.Timestamp(as_of))
                     & events[key].notna()]
    if rev.empty:
        return pd.DataFrame(columns=cols, dtype=np.float64).rename_axis(key)
    rating = rev["rating"].astype(float) if "rating" in rev.columns else pd.Series(np.nan, index=rev.index)
    sent = rev["sentiment"].astype(float) if "sentiment" in rev.columns else pd.Series(np.nan, index=rev.index)
    g = pd.DataFrame({"k": rev[key], "r": rating, "s": sent}).groupby("k")
    out = pd.DataFrame({"n_reviews": g.size().astype(np.float64), "mean_rating": g["r"].mean(),
                        "mean_sentiment": g["s"].mean()}).fillna(0.0)
    return out.rename_axis(key)


class MemoEncoder:
    """Wraps a text encoder so a text met twice (sentiment, then review vectors) is encoded once per run."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.memo: dict[str, np.ndarray] = {}
        self.spec = getattr(encoder, "spec", "bundled:all-MiniLM-L6-v2")
        self.max_length = getattr(encoder, "max_length", REVIEW_MAX_LENGTH)

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if new:
            self.memo.update(zip(new, self.encoder.encode(new)))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.memo[t] for t in texts]).astype(np.float32)


def review_vectors(events: pd.DataFrame, encoder, as_of=None) -> tuple[list[str], np.ndarray]:
    """Per user: the L2-normalised mean embedding of their review texts (strictly before `as_of` if given).

    A profile signal independent of the item catalog: what the user wrote, not what they touched. Users with
    no review text are absent. Identical texts are encoded once.
    """
    rev = events.loc[(events["event_type"] == "review") & events["review_text"].notna() & events["user_id"].notna()]
    if as_of is not None:
        rev = rev.loc[rev["ts"] < pd.Timestamp(as_of)]
    rev = rev.loc[rev["review_text"].astype(str).str.strip() != ""]
    if rev.empty:
        return [], np.zeros((0, int(encoder.dim)), dtype=np.float32)
    texts = rev["review_text"].astype(str)
    uniq = pd.unique(texts)
    vecs = encoder.encode(list(uniq))
    pos = pd.Index(uniq).get_indexer(texts)
    users = rev["user_id"].astype(str).to_numpy()
    order = pd.Index(sorted(set(users)))
    u = order.get_indexer(users)
    sums = np.zeros((len(order), vecs.shape[1]), dtype=np.float64)
    np.add.at(sums, u, vecs[pos].astype(np.float64))
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return list(order), (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def sentiment_table(events: pd.DataFrame, encoder, test_frac: float = 0.2, n_folds: int = 5,
                    min_reviews: int = 20) -> tuple[pd.DataFrame, dict, SentimentModel | None]:
    """Per review event (event_id, sentiment), the held-out report and a model fitted on every distinct review.

    Scores are out-of-fold by user (`out_of_fold_scores`); copies of one review share its score. With fewer
    than `min_reviews` distinct reviews, one rating class or one user, nothing can be learned honestly:
    the table is empty (sentiment unknown -> 0 in the features) and the report says why.
    """
    empty = pd.DataFrame({"event_id": pd.Series(dtype="string"), "sentiment": pd.Series(dtype="float64")})
    if "event_id" not in events.columns:
        raise ValueError("events: missing column 'event_id' needed to key review sentiment")
    rev = review_rows(events)
    if rev.empty:
        return empty, {"n_reviews": 0, "skipped": "no review events with text and rating"}, None
    dist = distinct_reviews(rev)
    y = rating_label(dist["rating"])
    n_users = dist["user_id"].nunique()
    report: dict = {"n_reviews": int(len(rev)), "n_distinct": int(len(dist))}
    if len(dist) < min_reviews or len(np.unique(y)) < 2 or n_users < 2:
        report["skipped"] = (f"{len(dist)} distinct reviews, {len(np.unique(y))} rating class(es), {n_users} user(s): "
                             f"need >= {min_reviews}, 2 and 2")
        return empty, report, None
    X = encoder.encode(dist["review_text"].astype(str).tolist())
    _, held_out = train_and_evaluate(X, dist["rating"], dist["ts"], test_frac=test_frac,
                                     encoder=getattr(encoder, "spec", "bundled:all-MiniLM-L6-v2"),
                                     max_length=getattr(encoder, "max_length", REVIEW_MAX_LENGTH))
    report["held_out"] = held_out
    dist["sentiment"] = out_of_fold_scores(X, dist["rating"], dist["user_id"], n_folds=n_folds, C=held_out["C"])
    model = SentimentModel(encoder=getattr(encoder, "spec", "bundled:all-MiniLM-L6-v2"),
                           max_length=getattr(encoder, "max_length", REVIEW_MAX_LENGTH), C=held_out["C"]).fit(X, y)
    key = ["user_id", "review_text", "rating"]
    table = rev[["event_id", *key]].merge(dist[[*key, "sentiment"]], on=key, how="left")
    out = pd.DataFrame({"event_id": table["event_id"].astype(str).astype("string"),
                        "sentiment": table["sentiment"].astype("float64")})
    return out, report, model
