"""Monitoring: the training-time drift report, the champion monitors (feature, prediction and target drift,
performance on the latest labelled window) that the retraining sensor reads, and the run summary."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import (AssetExecutionContext, AssetKey, AssetSpec, MaterializeResult, MetadataValue, Output, asset,
                     multi_asset)

from ml import monitoring as mon
from ml import registry
from ml.drift import data_drift
from ml.features import FEATURES
from orchestration.assets.common import load_embeddings, load_events, load_items, md_table
from orchestration.resources import PersonaConfig, Warehouse

GROUP = "monitoring"


@asset(group_name=GROUP,
       description="Evidently data-drift report on the ranker features: users active in the training windows "
                   "(reference) vs users active in the latest window (current), each row built as of its window's "
                   "start; HTML saved under artifacts/drift/.")
def drift_report(context: AssetExecutionContext, persona: PersonaConfig, ranker_model: str) -> Output[dict]:
    settings = persona.settings()
    ev = Path(ranker_model) / "eval"
    reference = pd.DataFrame(np.load(ev / "drift_reference_X.npy"), columns=FEATURES)
    current = pd.DataFrame(np.load(ev / "drift_current_X.npy"), columns=FEATURES)
    html = settings.artifacts_dir / "drift" / "ranker_features_drift.html"
    result = data_drift(reference, current, max_rows=int(settings["drift"]["max_rows"]), html_path=html)
    context.log.info(f"drift: {result.n_drifted}/{result.n_columns} columns drifted ({result.share_drifted:.1%})")
    out = {"drift_share": result.share_drifted, "n_drifted": result.n_drifted, "n_columns": result.n_columns,
           "html": str(html), "version": Path(ranker_model).name,
           "drifted_columns": sorted(c for c, v in result.columns.items() if v.get("drifted"))}
    json_path = html.with_suffix(".json")
    json_path.write_text(json.dumps({**out, "columns": result.columns}, indent=2, default=str))
    return Output(out, metadata={
        "drift_share": result.share_drifted, "n_drifted": result.n_drifted, "n_columns": result.n_columns,
        "reference_rows": len(reference), "current_rows": len(current),
        "report": MetadataValue.path(str(html)), "columns": MetadataValue.md(result.to_markdown())})


MONITOR_KEYS = ("feature_drift", "prediction_drift", "target_drift", "champion_performance")
_MONITOR_DEPS = [AssetKey("fct_events"), AssetKey("dim_items"), AssetKey("item_embeddings"), AssetKey("promoted_model")]


def monitor_settings(settings) -> dict:
    """The monitoring knobs, with the window defaulting to the split's test window length."""
    d = settings["drift"]
    return {"window_days": float(d.get("window_days") or settings["split"]["test_days"]),
            "share_threshold": float(d["share_threshold"]), "ndcg_drop": float(d["ndcg_drop"]),
            "column_threshold": float(d["column_threshold"]), "natural_factor": float(d["natural_factor"]),
            "max_rows": int(d["max_rows"]), "max_users": int(d.get("max_users", 300))}


def _link(path: Path) -> MetadataValue:
    return MetadataValue.path(str(path))


@multi_asset(
    specs=[
        AssetSpec("feature_drift", group_name=GROUP, deps=_MONITOR_DEPS,
                  description="Evidently data drift (normed Wasserstein per column) on the ranker's features: the rows "
                              "of the latest window the champion was validated on (saved in its version) vs the same "
                              "construction for the latest window of the current data. A column counts as drifted at "
                              "distance >= drift.column_threshold and >= drift.natural_factor x the part of its natural "
                              "movement (champion's training windows -> its validated window) that the elapsed time "
                              "explains. `drift_share` is what the "
                              "retraining sensor compares with drift.share_threshold; `drift_share_vs_training` is the "
                              "plain comparison with the training windows."),
        AssetSpec("prediction_drift", group_name=GROUP, deps=_MONITOR_DEPS,
                  description="Drift of the champion's ONNX score distribution: training-window rows vs latest-window rows."),
        AssetSpec("target_drift", group_name=GROUP, deps=_MONITOR_DEPS,
                  description="Drift of the event-type mix and conversion rates (events per view, per type): the "
                              "champion's training span vs the latest window."),
        AssetSpec("champion_performance", group_name=GROUP, deps=_MONITOR_DEPS,
                  description="The champion's NDCG@10 on the latest labelled window vs its NDCG@10 at training time; "
                              "the sensor retrains when it falls by drift.ndcg_drop or more."),
    ],
)
def champion_monitoring(context: AssetExecutionContext, persona: PersonaConfig, warehouse: Warehouse):
    settings = persona.settings()
    cfg = settings.data
    knobs = monitor_settings(settings)
    champ = registry.champion_dir(settings.models_dir)
    manifest = json.loads((champ / "manifest.json").read_text())
    champ_metrics = json.loads((champ / "metrics.json").read_text())
    events = load_events(warehouse, settings)
    items = load_items(warehouse, settings)
    item_ids, matrix = load_embeddings(warehouse, settings)
    window = mon.latest_window(events, knobs["window_days"])
    context.log.info(f"champion {champ.name}; latest window {window.start:%Y-%m-%d}..{window.end:%Y-%m-%d}")
    snap, cur_X = mon.current_feature_rows(events, items, item_ids, matrix, window, cfg, knobs["max_users"])
    ref_X = mon.champion_reference(champ, "latest")
    out = settings.artifacts_dir / "drift" / "monitor"
    out.mkdir(parents=True, exist_ok=True)
    common = {"champion": champ.name, "window_start": str(window.start), "window_end": str(window.end)}
    fingerprint = registry.data_hash(str(len(events)), str(events["ts"].max()),
                                     str(int(pd.util.hash_pandas_object(events, index=False).sum())))

    train_X = mon.champion_reference(champ, "training")
    scale = mon.natural_scale(manifest["split"], window.start)
    fd = mon.feature_drift(ref_X, cur_X, baseline_X=train_X, natural_scale=scale, max_rows=knobs["max_rows"],
                           share_threshold=knobs["share_threshold"], column_threshold=knobs["column_threshold"],
                           natural_factor=knobs["natural_factor"], html_path=out / "feature_drift.html")
    fd_train = mon.feature_drift(train_X, cur_X, max_rows=knobs["max_rows"], share_threshold=knobs["share_threshold"],
                                 column_threshold=knobs["column_threshold"],
                                 html_path=out / "feature_drift_vs_training.html")
    pdrift, stats = mon.prediction_drift(mon.onnx_scores(champ, ref_X), mon.onnx_scores(champ, cur_X),
                                         max_rows=knobs["max_rows"], html_path=out / "prediction_drift.html")
    split = manifest["split"]
    ts = events["ts"]
    ref_events = events[(ts >= pd.Timestamp(split["train"][0]["start"])) & (ts < pd.Timestamp(split["test"]["start"]))]
    cur_events = events[(ts >= window.start) & (ts < window.end)]
    tdrift, rates = mon.target_drift(ref_events, cur_events, max_rows=knobs["max_rows"],
                                     html_path=out / "target_drift.html")
    ndcg_now, n_users = mon.window_ndcg(snap, events, window, champ, cfg)
    ndcg_champion = float(champ_metrics["ranker"]["ndcg@10"])
    decision = mon.retrain_decision(fd.share_drifted, ndcg_now, ndcg_champion,
                                    share_threshold=knobs["share_threshold"], ndcg_drop=knobs["ndcg_drop"])
    context.log.info(f"feature drift {fd.n_drifted}/{fd.n_columns} ({fd.share_drifted:.1%}); NDCG@10 latest "
                     f"{ndcg_now:.4f} vs champion {ndcg_champion:.4f}; retrain: {decision.reasons or 'no'}")
    (out / "latest.json").write_text(json.dumps({
        **common, "feature_drift": fd.to_dict(), "feature_drift_vs_training": fd_train.to_dict(), "prediction_drift": {**pdrift.to_dict(), "scores": stats},
        "target_drift": {**tdrift.to_dict(), "rates": rates.to_dict(orient="records")},
        "champion_performance": {"ndcg@10": ndcg_now, "champion_ndcg@10": ndcg_champion, "users": n_users},
        "decision": decision.as_dict(), "knobs": knobs}, indent=2, default=str))

    yield MaterializeResult(asset_key="feature_drift", metadata={
        **common, "data_fingerprint": fingerprint, "drift_share": fd.share_drifted, "n_drifted": fd.n_drifted, "n_columns": fd.n_columns,
        "share_threshold": knobs["share_threshold"], "column_threshold": knobs["column_threshold"],
        "natural_factor": knobs["natural_factor"], "natural_scale": scale,
        "reference_rows": len(ref_X), "current_rows": len(cur_X),
        "reference": "champion's latest validated window (eval/drift_current_X.npy)",
        "drift_share_vs_training": fd_train.share_drifted,
        "report_vs_training": _link(out / "feature_drift_vs_training.html"),
        "drifted_columns": MetadataValue.json(fd.drifted_columns),
        "report": _link(out / "feature_drift.html"), "columns": MetadataValue.md(fd.to_markdown())})
    s = stats
    yield MaterializeResult(asset_key="prediction_drift", metadata={
        **common, "drifted": bool(pdrift.columns["score"]["drifted"]),
        "method": str(pdrift.columns["score"]["method"]), "score": pdrift.columns["score"]["score"] or float("nan"),
        "reference_mean": s["reference"].get("mean", float("nan")), "current_mean": s["current"].get("mean", float("nan")),
        "scores": MetadataValue.json(stats), "report": _link(out / "prediction_drift.html")})
    yield MaterializeResult(asset_key="target_drift", metadata={
        **common, "drifted": bool(tdrift.columns["event_type"]["drifted"]),
        "method": str(tdrift.columns["event_type"]["method"]),
        "score": tdrift.columns["event_type"]["score"] or float("nan"),
        "rates": MetadataValue.md(md_table(rates)), "report": _link(out / "target_drift.html")})
    yield MaterializeResult(asset_key="champion_performance", metadata={
        **common, "ndcg@10": ndcg_now, "champion_ndcg@10": ndcg_champion, "ndcg_drop": ndcg_champion - ndcg_now,
        "ndcg_drop_threshold": knobs["ndcg_drop"], "users": n_users, "retrain": decision.retrain,
        "reasons": MetadataValue.json(decision.reasons), "summary": _link(out / "latest.json")})


@asset(group_name=GROUP, deps=[AssetKey("user_profiles")],
       description="One JSON with the run's key numbers (artifacts/summary.json), printed by `persona run`.")
def run_summary(context: AssetExecutionContext, persona: PersonaConfig, warehouse: Warehouse,
                promoted_model: str, ranker_model: str, drift_report: dict) -> MaterializeResult:
    from orchestration.assets.ranking import onnx_max_abs_diff

    settings = persona.settings()
    version_dir = Path(ranker_model)
    metrics = json.loads((version_dir / "metrics.json").read_text())
    accepted = int(warehouse.read(settings, "select count(*) n from raw_events")["n"].iloc[0])
    quarantined = int(warehouse.read(settings, "select count(*) n from quarantine_events")["n"].iloc[0])
    prof = warehouse.read(settings, "select snapshot, count(*) n, count(distinct segment) k, any_value(as_of) as_of "
                                    "from user_profiles group by 1")
    prof = prof.set_index("snapshot")
    diff, _ = onnx_max_abs_diff(version_dir)
    keep = ("ndcg@10", "recall@20", "mrr@20", "hitrate@10")
    summary = {
        "events_in": accepted + quarantined,
        "events_accepted": accepted,
        "events_quarantined": quarantined,
        "users_profiled": int(prof.loc["serving", "n"]),
        "users_profiled_at_training_cutoff": int(prof.loc["evaluation", "n"]),
        "segments": int(prof.loc["serving", "k"]),
        "metrics": {m: {k: metrics[m][k] for k in keep} for m in ("ranker", "popularity", "covisitation", "repeat")},
        "intervals": {m: {k: metrics[m][f"{k}_ci"] for k in keep} for m in ("ranker", "popularity", "covisitation", "repeat")},
        "ranker_vs_best_baseline": metrics["ranker"]["vs_best_baseline"],
        "test_users": metrics["counts"]["test_users"],
        "candidate_recall": metrics["candidate_recall"],
        "onnx_max_abs_diff": diff,
        "drift_share": drift_report["drift_share"],
        "drift_report": drift_report["html"],
        "model_version": version_dir.name,
        "model_dir": str(version_dir),
        "champion_dir": promoted_model,
        "warehouse": str(warehouse.resolve(settings)),
        "alerts_log": str(settings.alerts_path),
    }
    path = settings.artifacts_dir / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    return MaterializeResult(metadata={"path": MetadataValue.path(str(path)), "summary": MetadataValue.json(summary)})
