"""Drift report and the run summary."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, Output, asset

from ml.drift import data_drift
from ml.features import FEATURES
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
