"""Jobs over the asset graph."""

from dagster import AssetSelection, define_asset_job

full_job = define_asset_job(
    "persona_full",
    selection=AssetSelection.all(),
    description="Materialize everything: ingest -> checks -> dbt -> embeddings -> profiles -> ranker -> ONNX -> "
                "promotion -> drift -> summary.",
)
