"""Ranker: train + evaluate against baselines, export to ONNX, gate and promote."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import (AssetCheckResult, AssetCheckSeverity, AssetExecutionContext, AssetKey, MetadataValue, Output,
                     asset, asset_check)

from data_contracts.privacy import Pseudonymizer
from ml import registry
from ml.features import FEATURES
from ml.onnx_export import OnnxScorer, export_ranker
from ml.monitoring import gate_versions
from ml.pipeline import metrics_markdown, save_eval_set, snapshot_at, train_and_evaluate
from orchestration.assets.common import load_embeddings, load_events, load_items, md_table
from orchestration.resources import PersonaConfig, Warehouse
from persona.alerts import Alert, send_alert

GROUP = "ranking"


def _data_hash(warehouse: Warehouse, settings) -> str:
    row = warehouse.read(settings, "select count(*) n, min(ts) a, max(ts) b, sum(hash(event_id)) h from fct_events")
    return registry.data_hash(json.dumps(row.iloc[0].to_dict(), default=str))


@asset(group_name=GROUP, deps=[AssetKey("fct_events"), AssetKey("dim_items"), AssetKey("item_embeddings"),
                               AssetKey("user_profiles"), AssetKey("review_sentiment")],
       description="LightGBM lambdarank over (user, candidate) features on a temporal split, evaluated on the test "
                   "window against popularity, co-visitation and repeat baselines (bootstrap 95% intervals), "
                   "exported to ONNX into a new registry version with the serving snapshot.")
def ranker_model(context: AssetExecutionContext, persona: PersonaConfig, warehouse: Warehouse) -> Output[str]:
    settings = persona.settings()
    cfg = settings.data
    events = load_events(warehouse, settings)
    items = load_items(warehouse, settings)
    item_ids, matrix = load_embeddings(warehouse, settings)
    result = train_and_evaluate(events, items, item_ids, matrix, cfg, log=context.log.info)
    context.log.info("building the serving snapshot (all events)")
    serving = snapshot_at(events, items, item_ids, matrix, result.split.end, cfg)
    titles = dict(zip(items["item_id"].astype(str), items["title"].fillna("").astype(str)))
    metrics = dict(result.metrics, candidate_recall=result.candidate_recall, counts=result.counts)

    def write(folder: Path) -> None:
        export_ranker(result.model, len(FEATURES), folder / "ranker.onnx", int(cfg["onnx"]["target_opset"]))
        result.model.booster_.save_model(str(folder / "ranker.txt"))
        serving.save(folder / "snapshot")
        save_eval_set(folder / "eval", result)
        (folder / "items.json").write_text(json.dumps(titles))
        write_serving_files(folder, settings, warehouse, items)

    manifest = {"split": result.split.as_dict(), "training_cutoff": str(result.split.training_cutoff),
                "data_hash": _data_hash(warehouse, settings), "code_version": registry.code_version(),
                "targets": cfg["targets"], "n_features": len(FEATURES), "encoder": cfg["encoder"]["model"],
                "serving_as_of": str(result.split.end), "counts": result.counts,
                "pseudonym_key": Pseudonymizer.from_settings(settings, create=False).fingerprint}
    version_dir = registry.create_version(settings.models_dir, write, manifest, metrics, FEATURES)
    context.log.info(f"wrote model version {version_dir.name}")

    rows = [{"model": m, "metric": k, "value": v[k], "ci_low": v[f"{k}_ci"][0], "ci_high": v[f"{k}_ci"][1],
             "n_users": v["n_users"], "version": version_dir.name}
            for m, v in result.metrics.items() for k in ("ndcg@10", "recall@20", "mrr@20", "hitrate@10")]
    importance = result.importance.assign(version=version_dir.name)
    warehouse.replace(settings, {"ranker_evaluation": pd.DataFrame(rows), "ranker_feature_importance": importance})
    diff = result.metrics["ranker"]["vs_best_baseline"]
    recall = pd.DataFrame([{"source": k, "recall": v} for k, v in result.candidate_recall.items()])
    return Output(str(version_dir), metadata={
        "version": version_dir.name, "model_dir": MetadataValue.path(str(version_dir)),
        "metrics": MetadataValue.md(metrics_markdown(result.metrics)),
        "ndcg@10": result.metrics["ranker"]["ndcg@10"],
        "vs_best_baseline": MetadataValue.json(diff),
        "candidate_recall": MetadataValue.md(md_table(recall)),
        "feature_importance": MetadataValue.md(md_table(result.importance.head(15))),
        **{k: v for k, v in result.counts.items()},
    })


def write_serving_files(folder: Path, settings, warehouse: Warehouse, items: pd.DataFrame) -> None:
    """What the HTTP API needs besides the ranker: item metadata (search, similar), the batch profiles
    (profile endpoint) and the ONNX text encoder (query encoding), exported once per encoder name."""
    from ml.onnx_encoder import ensure_encoder, link_or_copy

    catalog = {str(r.item_id): {"title": None if pd.isna(r.title) else str(r.title),
                                "category_path": None if pd.isna(r.category_path) else str(r.category_path),
                                "brand": None if pd.isna(r.brand) else str(r.brand),
                                "price": None if pd.isna(r.price) else float(r.price)}
               for r in items.itertuples()}
    (folder / "catalog.json").write_text(json.dumps(catalog))
    prof = warehouse.read(settings, "select user_id, segment, tags, top_categories, top_brands, price_band, "
                                    "activity_level, lifecycle_stage, purchase_intent from user_profiles "
                                    "where snapshot = 'serving'")
    records = {}
    for r in prof.itertuples(index=False):
        records[str(r.user_id)] = {
            "segment": int(r.segment), "tags": [str(t) for t in r.tags], "top_categories": [str(t) for t in r.top_categories],
            "top_brands": [str(t) for t in r.top_brands], "price_band": r.price_band, "activity_level": r.activity_level,
            "lifecycle_stage": r.lifecycle_stage, "purchase_intent": bool(r.purchase_intent), "batch_interests": []}
    interests = warehouse.read(settings, "select user_id, label, weight from user_interests where snapshot = 'serving' "
                                         "order by user_id, interest_rank")
    for r in interests.itertuples(index=False):
        if str(r.user_id) in records:
            records[str(r.user_id)]["batch_interests"].append({"label": str(r.label), "weight": round(float(r.weight), 4)})
    (folder / "profiles.json").write_text(json.dumps(records))
    enc = settings["encoder"]
    cached = ensure_encoder(settings.models_dir / "encoders", enc["model"], int(enc["max_length"]))
    link_or_copy(cached, folder / "encoder")


def onnx_max_abs_diff(version_dir: str | Path) -> tuple[float, int]:
    import lightgbm as lgb

    version_dir = Path(version_dir)
    X = np.load(version_dir / "eval" / "test_X.npy")
    booster = lgb.Booster(model_file=str(version_dir / "ranker.txt"))
    native = booster.predict(X)
    onnx = OnnxScorer(version_dir / "ranker.onnx", providers=["CPUExecutionProvider"])(X)
    return float(np.max(np.abs(native - onnx))) if len(X) else float("nan"), len(X)


@asset_check(asset=ranker_model, blocking=True,
             description="ONNX parity: max |onnx - lightgbm| over the test feature rows is below onnx.parity_tolerance.")
def onnx_parity(context, persona: PersonaConfig, ranker_model: str) -> AssetCheckResult:
    settings = persona.settings()
    tol = float(settings["onnx"]["parity_tolerance"])
    diff, n = onnx_max_abs_diff(ranker_model)
    passed = bool(diff < tol)
    if not passed:
        send_alert(Alert("error", "ranker_model", "onnx_parity",
                         f"ONNX scores differ from LightGBM by {diff:.3g} (tolerance {tol})", {"rows": n}),
                   jsonl_path=settings.alerts_path, webhook_url=settings["alerts"]["webhook_url"])
    return AssetCheckResult(passed=passed, severity=AssetCheckSeverity.ERROR,
                            metadata={"max_abs_diff": diff, "rows": n, "tolerance": tol})


@asset(group_name=GROUP,
       description="Gate and promote: the new version replaces the champion only if, scored on the same test rows, "
                   "its NDCG@10 is not below the champion's by more than registry.promotion_tolerance.")
def promoted_model(context: AssetExecutionContext, persona: PersonaConfig, ranker_model: str) -> Output[str]:
    settings = persona.settings()
    models_dir = settings.models_dir
    challenger_dir = Path(ranker_model)
    metrics = json.loads((challenger_dir / "metrics.json").read_text())
    current = registry.champion_version(models_dir)
    # both ONNX models scored on the challenger's test rows: a window after both training cutoffs
    g = gate_versions(challenger_dir, None if current is None else models_dir / "versions" / current,
                      tolerance=float(settings["registry"]["promotion_tolerance"]))
    ok, reason, challenger, champion = g.promote, g.reason, g.challenger_ndcg, g.champion_ndcg
    if ok:
        registry.promote(models_dir, challenger_dir.name, reason=reason,
                         details={"run_id": context.run_id, "challenger_ndcg@10": challenger,
                                  "champion_ndcg@10": champion})
        context.log.info(f"promoted {challenger_dir.name}: {reason}")
    else:
        context.log.warning(f"kept champion {current}: {reason}")
        send_alert(Alert("warn", "promoted_model", "promotion_gate", f"challenger {challenger_dir.name} refused: {reason}",
                         {"challenger_ndcg@10": challenger, "champion_ndcg@10": champion}),
                   jsonl_path=settings.alerts_path, webhook_url=settings["alerts"]["webhook_url"])
    champion_now = registry.champion_dir(models_dir)
    return Output(str(champion_now), metadata={
        "champion": champion_now.name, "challenger": challenger_dir.name, "promoted": ok, "reason": reason,
        "challenger_ndcg@10": challenger, "champion_ndcg@10": champion if champion is not None else float("nan"),
        "offline_test_ndcg@10": metrics["ranker"]["ndcg@10"]})
