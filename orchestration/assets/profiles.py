"""Embeddings and user profiles."""

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from ml.embeddings import TextEncoder, embed_items
from ml.pipeline import split_for
from ml.profiles import build_profiles
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


@asset(group_name=GROUP, deps=[AssetKey("fct_events"), AssetKey("item_embeddings")],
       description="Per identified user: profile vector (event-type and time-decay weighted mean of item embeddings), "
                   "k-means segment (k by silhouette) and readable tags. Two snapshots: `evaluation` as of the "
                   "training cutoff (start of the test window) and `serving` as of the last event.")
def user_profiles(context: AssetExecutionContext, persona: PersonaConfig, warehouse: Warehouse) -> MaterializeResult:
    settings = persona.settings()
    cfg = settings.data
    events = load_events(warehouse, settings)
    items = load_items(warehouse, settings)
    item_ids, matrix = load_embeddings(warehouse, settings)
    split = split_for(events, cfg)
    frames, summaries, meta = [], [], {}
    plots_dir = settings.artifacts_dir / "profiles"
    for snapshot, as_of in (("evaluation", split.training_cutoff), ("serving", split.end)):
        profiles, summary = build_profiles(events, items, item_ids, matrix, as_of, cfg)
        profiles.insert(0, "snapshot", snapshot)
        summary.insert(0, "snapshot", snapshot)
        frames.append(profiles)
        summaries.append(summary)
        X = np.vstack(profiles["vector"].map(lambda v: np.asarray(v, np.float32))) if len(profiles) else np.zeros((0, 1))
        png = plot_segments(X, profiles["segment"].to_numpy(), plots_dir / f"segments_{snapshot}.png")
        meta[f"{snapshot}_users"] = len(profiles)
        meta[f"{snapshot}_as_of"] = str(as_of)
        meta[f"{snapshot}_segments"] = int(profiles["segment"].nunique()) if len(profiles) else 0
        meta[f"{snapshot}_plot"] = MetadataValue.path(str(png))
        context.log.info(f"{snapshot}: {len(profiles):,} profiles as of {as_of}, {meta[f'{snapshot}_segments']} segments")
    profiles = pd.concat(frames, ignore_index=True)
    segments = pd.concat(summaries, ignore_index=True)
    list_cols = [c for c in segments.columns if segments[c].map(lambda v: isinstance(v, (list, np.ndarray))).any()]
    for c in list_cols:
        segments[c] = segments[c].map(lambda v: ", ".join(map(str, v)))
    warehouse.replace(settings, {"user_profiles": with_vectors(profiles, "vector"), "user_segments": segments})
    serving = segments[segments["snapshot"] == "serving"].drop(columns=["snapshot"])
    return MaterializeResult(metadata={
        "dagster/row_count": len(profiles), **meta,
        "segments": MetadataValue.md(md_table(serving, 20)),
        "tags_sample": MetadataValue.md(md_table(
            profiles.loc[profiles["snapshot"] == "serving", ["user_id", "segment", "tags"]]
            .assign(tags=lambda d: d["tags"].map(lambda t: ", ".join(t))), 10)),
    })
