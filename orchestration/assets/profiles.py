"""Embeddings and user profiles."""

import base64
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from ml.embeddings import TextEncoder, embed_items
from ml.pipeline import split_for
from ml.profiles import build_profiles, user_interests
from ml.segments import plot_segments
from orchestration.assets.common import (load_embeddings, load_events, load_items, md_table, with_vectors)
from orchestration.resources import PersonaConfig, Warehouse
from persona.warehouse import table_exists

GROUP = "profiles"


@asset(group_name=GROUP, deps=[AssetKey("dim_items")],
       description="Item text (title | category | brand) encoded by the configured transformer (mean pooling, "
                   "L2-normalised), with model name and a content hash per item; unchanged items are not re-encoded.")
def item_embeddings(context: AssetExecutionContext, persona: PersonaConfig, warehouse: Warehouse) -> MaterializeResult:
    settings = persona.settings()
    items = load_items(warehouse, settings)
    path = warehouse.resolve(settings)
    cache = None
    if table_exists(path, "item_embeddings"):
        cache = warehouse.read(settings, "select content_hash, model, embedding from item_embeddings")
    enc = settings["encoder"]
    encoder = TextEncoder(enc["model"], device=enc["device"], batch_size=enc["batch_size"], max_length=enc["max_length"])
    context.log.info(f"encoding {len(items)} items with {encoder!r}")
    out, stats = embed_items(items, encoder, cache)
    warehouse.replace(settings, {"item_embeddings": with_vectors(out, "embedding")})
    context.log.info(f"encoded {stats['encoded']}, reused {stats['reused']} from the cache")
    return MaterializeResult(metadata={
        "dagster/row_count": len(out), "model": encoder.model_name, "dim": encoder.dim, "device": str(encoder.device),
        "encoded": stats["encoded"], "reused": stats["reused"],
        "sample": MetadataValue.md(md_table(out[["item_id", "text"]], 10)),
    })


def png_markdown(path: Path, alt: str) -> str:
    """Markdown that shows a PNG inline in the Dagster UI (base64 data URI) and names its file."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{data})\n\n`{path}`"


def segment_table(summary: pd.DataFrame) -> str:
    """The segment summary as a markdown table a merchandiser can read."""
    shown = pd.DataFrame({
        "segment": summary["segment"], "users": summary["users"].map("{:,}".format),
        "share": summary["share"].map("{:.1%}".format),
        "top tags": summary["top_tags"].map(", ".join), "top categories": summary["top_categories"].map(", ".join),
        "median price band": summary["median_price_band"].fillna("unknown"),
        "lifecycle mix": summary["lifecycle_mix"]})
    return md_table(shown, 50)


@asset(group_name=GROUP, deps=[AssetKey("fct_events"), AssetKey("item_embeddings")],
       description="Per identified user: profile vector (event-type and time-decay weighted mean of item embeddings), "
                   "k-means segment (k by silhouette), readable tags, and up to `profiles.max_interests` interest "
                   "vectors (table `user_interests`); segment summary in table `user_segments`, segment maps under "
                   "artifacts/profiles/. Two snapshots: `evaluation` as of the training cutoff (start of the test "
                   "window) and `serving` as of the last event.")
def user_profiles(context: AssetExecutionContext, persona: PersonaConfig, warehouse: Warehouse) -> MaterializeResult:
    settings = persona.settings()
    cfg = settings.data
    events = load_events(warehouse, settings)
    items = load_items(warehouse, settings)
    item_ids, matrix = load_embeddings(warehouse, settings)
    split = split_for(events, cfg)
    frames, summaries, interest_frames, meta, plots = [], [], [], {}, {}
    plots_dir = settings.artifacts_dir / "profiles"
    for snapshot, as_of in (("evaluation", split.training_cutoff), ("serving", split.end)):
        profiles, summary = build_profiles(events, items, item_ids, matrix, as_of, cfg)
        interests = user_interests(events, items, item_ids, matrix, as_of, cfg)
        profiles.insert(0, "snapshot", snapshot)
        summary.insert(0, "snapshot", snapshot)
        interests.insert(1, "snapshot", snapshot)
        frames.append(profiles)
        summaries.append(summary)
        interest_frames.append(interests)
        X = np.vstack(profiles["vector"].map(lambda v: np.asarray(v, np.float32))) if len(profiles) else np.zeros((0, 1))
        plot = plot_segments(X, profiles["segment"].to_numpy(), plots_dir / f"segments_{snapshot}.png",
                             title=f"User segments, {snapshot} snapshot (PCA of profile vectors)")
        plots[snapshot] = plot
        per_user = interests.groupby("user_id").size()
        meta[f"{snapshot}_users"] = len(profiles)
        meta[f"{snapshot}_as_of"] = str(as_of)
        meta[f"{snapshot}_segments"] = int(profiles["segment"].nunique()) if len(profiles) else 0
        meta[f"{snapshot}_silhouette_by_k"] = MetadataValue.json(
            {str(k): round(v, 4) for k, v in summary.attrs.get("silhouette_by_k", {}).items()})
        meta[f"{snapshot}_plot"] = MetadataValue.path(str(plot.path))
        meta[f"{snapshot}_interest_rows"] = len(interests)
        meta[f"{snapshot}_users_with_several_interests"] = int((per_user > 1).sum())
        context.log.info(f"{snapshot}: {len(profiles):,} profiles as of {as_of}, {meta[f'{snapshot}_segments']} "
                         f"segments, {len(interests):,} interests")
    profiles = pd.concat(frames, ignore_index=True)
    segments = pd.concat(summaries, ignore_index=True)
    interests = pd.concat(interest_frames, ignore_index=True)
    serving = segments[segments["snapshot"] == "serving"].drop(columns=["snapshot"])
    stored = segments.copy()
    for c in ("top_tags", "top_categories"):
        stored[c] = stored[c].map(lambda v: [str(t) for t in v])
    warehouse.replace(settings, {"user_profiles": with_vectors(profiles, "vector"), "user_segments": stored,
                                 "user_interests": with_vectors(interests, "vector")})
    return MaterializeResult(metadata={
        "dagster/row_count": len(profiles), **meta,
        "user_interests_rows": len(interests),
        "segments": MetadataValue.md(segment_table(serving)),
        "segment_map": MetadataValue.md(png_markdown(plots["serving"].path, "users by segment, serving snapshot")),
        "tags_sample": MetadataValue.md(md_table(
            profiles.loc[profiles["snapshot"] == "serving", ["user_id", "segment", "tags"]]
            .assign(tags=lambda d: d["tags"].map(lambda t: ", ".join(t))), 10)),
    })
