"""Review sentiment: every review event's text scored by a model trained on the shop's own star ratings."""

import json

import pandas as pd
from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from ml.embeddings import TextEncoder
from ml.reviews import LABELS, REVIEW_MAX_LENGTH, MemoEncoder, review_vectors, sentiment_table
from orchestration.assets.common import md_table, with_vectors
from orchestration.resources import PersonaConfig, Warehouse

GROUP = "profiles"


@asset(group_name=GROUP, deps=[AssetKey("fct_events")],
       description="Sentiment (P(positive) - P(negative), in [-1, 1]) of each review event's text: LogisticRegression "
                   "on MiniLM embeddings, labels from the star rating (1-2 negative, 3 neutral, 4-5 positive), "
                   "scores out-of-fold by user; held-out accuracy / macro-F1 vs the majority class on a temporal "
                   "split. Empty where the source has no reviews. Read by load_events for the review features. Also "
                   "user_review_vectors: per user, the normalised mean embedding of their review texts.")
def review_sentiment(context: AssetExecutionContext, persona: PersonaConfig, warehouse: Warehouse) -> MaterializeResult:
    settings = persona.settings()
    events = warehouse.read(settings, "select event_id, user_id, item_id, ts, event_type, rating, review_text "
                                      "from fct_events where event_type = 'review'")
    enc = settings["encoder"]
    encoder = None
    if len(events):
        encoder = MemoEncoder(TextEncoder(enc["model"], device=enc["device"], batch_size=enc["batch_size"],
                                          max_length=REVIEW_MAX_LENGTH))
    table, report, model = sentiment_table(events, encoder)
    users, vectors = review_vectors(events, encoder) if encoder is not None else ([], [])
    texted = events["review_text"].notna() & (events["review_text"].astype("string").str.strip() != "")
    n_texts = events.loc[texted].groupby("user_id").size() if len(events) else pd.Series(dtype="int64")
    user_vectors = pd.DataFrame({"user_id": pd.Series(users, dtype="string"),
                                 "n_review_texts": n_texts.reindex(users).fillna(0).astype("int64").to_numpy(),
                                 "vector": list(vectors)})
    warehouse.replace(settings, {"review_sentiment": table,
                                 "user_review_vectors": with_vectors(user_vectors, "vector")})
    metadata = {"dagster/row_count": len(table), "n_reviews": report["n_reviews"],
                "users_with_review_vector": len(user_vectors)}
    if "skipped" in report:
        context.log.info(f"review sentiment skipped: {report['skipped']}")
        metadata["skipped"] = report["skipped"]
    if model is not None:
        folder = settings.artifacts_dir / "reviews"
        path = model.save(folder / "sentiment_model.joblib")
        (folder / "sentiment_report.json").write_text(json.dumps(report, indent=2, default=str))
        h = report["held_out"]
        context.log.info(f"sentiment held-out accuracy {h['accuracy']:.3f} (majority {h['majority_accuracy']:.3f}), "
                         f"macro-F1 {h['macro_f1']:.3f} (majority {h['majority_macro_f1']:.3f})")
        conf = pd.DataFrame(h["confusion"], columns=[f"pred {c}" for c in LABELS]).assign(true=LABELS)
        metadata.update({
            "n_distinct": report["n_distinct"], "accuracy": h["accuracy"], "macro_f1": h["macro_f1"],
            "majority_accuracy": h["majority_accuracy"], "majority_macro_f1": h["majority_macro_f1"],
            "n_train": h["n_train"], "n_test": h["n_test"], "test_from": h["test_from"],
            "confusion": MetadataValue.md(md_table(conf[["true", *conf.columns[:-1]]])),
            "model_path": MetadataValue.path(str(path)),
        })
    return MaterializeResult(metadata=metadata)
