"""Jobs over the asset graph."""

from dagster import AssetSelection, define_asset_job

full_job = define_asset_job(
    "persona_full",
    selection=AssetSelection.all(),
    description="Materialize everything: ingest -> checks -> dbt -> embeddings -> profiles -> ranker -> ONNX -> "
                "promotion -> drift -> summary.",
)

MONITORS = ("feature_drift", "prediction_drift", "target_drift", "champion_performance")

# retraining reads the modelled tables as they are (the daily run and the drift check refresh them)
retrain_job = define_asset_job(
    "persona_retrain",
    selection=AssetSelection.assets("ranker_model", "promoted_model", "drift_report", "run_summary"),
    description="Retrain the ranker on the current marts, export ONNX into a new registry version, gate it against "
                "the champion on a window after both training cutoffs (promote only when not worse beyond "
                "registry.promotion_tolerance). Launched by the `drift_retrain_sensor`; the next drift check "
                "monitors whichever model is champion afterwards.",
)

# fresh data in, monitors out: no training
drift_check_job = define_asset_job(
    "persona_drift_check",
    selection=(AssetSelection.assets("fct_events", "dim_items", "item_embeddings").upstream()
               | AssetSelection.assets(*MONITORS)).required_multi_asset_neighbors(),
    description="Ingest the source, rebuild the marts the monitors read, refresh item embeddings (cached), then "
                "compare the champion with the latest window: feature, prediction and target drift, and NDCG@10.",
)
