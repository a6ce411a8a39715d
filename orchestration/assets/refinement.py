"""Refined profiles: the two-tower model of `ml.refine` over fused item vectors, trained on behaviour.

Kept in the pipeline because it beat the unrefined profile in embedding retrieval on the GA test window
(bench/results/refinement.md); the asset re-measures that on every run and puts both numbers in its metadata.
Its vectors are published, not fed to the ranker: there they gave no gain (bench/results/refinement_ranker.md).
"""

import json
import time

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from ml import evaluation as E
from ml import refine as R
from ml.fusion import ImageEncoder, image_inputs, read_image_table, structured_codes
from ml.pipeline import split_for
from ml.split import eligible_targets
from orchestration.assets.common import load_embeddings, load_events, load_items, with_vectors
from orchestration.resources import PersonaConfig, Warehouse

GROUP = "profiles"


def _codes(items: pd.DataFrame, item_ids: list[str], n_buckets: int) -> np.ndarray:
    catalog = items.drop_duplicates("item_id").assign(item_id=lambda d: d["item_id"].astype(str)).set_index("item_id")
    return structured_codes(catalog.reindex(item_ids).reset_index(), n_buckets=n_buckets)


def _images(settings, item_ids: list[str]) -> tuple[np.ndarray | None, int]:
    """The `fusion.images` table aligned to the embedded items (None when not configured) and how many have one."""
    fc = settings.data.get("fusion") or {}
    if not fc.get("images"):
        return None, 0
    path = settings.path(fc["images"])
    model = fc.get("image_model")

    def encoder():
        return ImageEncoder(settings.path(model), device=fc.get("device", "auto"), batch_size=int(fc["batch_size"]))

    image, has = image_inputs(read_image_table(path), item_ids, vector_column=fc["vector_column"],
                              path_column=fc["path_column"], encoder_factory=encoder if model else None,
                              base_dir=path.parent, source=f"fusion.images {path}")
    return image, int(has.sum())


def _vectors(refined: R.Refined, events: pd.DataFrame, item_ids: list[str], as_of, snapshot: str
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    prep = R.prepare(events, item_ids, as_of, [], refined.type_names)
    users, hist = R.cutoff_histories(prep, prep.user_ids.tolist(), refined.cfg.max_history)
    U = refined.user_matrix(hist)
    users_df = pd.DataFrame({"snapshot": snapshot, "user_id": users, "as_of": pd.Timestamp(as_of), "vector": list(U)})
    items_df = pd.DataFrame({"snapshot": snapshot, "item_id": item_ids, "vector": list(refined.item_matrix())})
    return users_df, items_df


@asset(group_name=GROUP, deps=[AssetKey("fct_events"), AssetKey("dim_items"), AssetKey("item_embeddings"),
                               AssetKey("user_profiles")],
       description="Two-tower refinement of the profiles (ml/refine.py): item tower = text embedding fused with "
                   "category/brand/price codes by a learned projection, user tower = learned attention over the "
                   "history; trained with in-batch InfoNCE on 'history before a session -> its cart/purchase items'. "
                   "Tables refined_user_vectors / refined_item_vectors, snapshots `evaluation` (trained before the "
                   "test window, scored on it against the unrefined profile) and `serving` (all events). "
                   "Image vectors join the item tower when fusion.images is set. Off with refinement.enabled: false.")
def refined_profiles(context: AssetExecutionContext, persona: PersonaConfig, warehouse: Warehouse) -> MaterializeResult:
    settings = persona.settings()
    cfg = settings.data
    if not cfg["refinement"].get("enabled", True):
        context.log.info("refinement.enabled is false: nothing trained")
        return MaterializeResult(metadata={"enabled": False})
    rc = R.config_from_settings(cfg)
    events = load_events(warehouse, settings)
    items = load_items(warehouse, settings)
    item_ids, text = load_embeddings(warehouse, settings)
    codes = _codes(items, item_ids, rc.n_buckets) if rc.item_tower == "fused" else None
    image, n_images = _images(settings, item_ids) if rc.item_tower == "fused" else (None, 0)
    if n_images:
        context.log.info(f"fusion.images: image vectors for {n_images} of {len(item_ids)} items "
                         f"(dimension {image.shape[1]})")
    elif cfg.get("fusion", {}).get("images"):
        context.log.warning("fusion.images is set but refinement.item_tower is not 'fused' or no item has an "
                            "image: images not used")
    split = split_for(events, cfg)
    targets = list(cfg["targets"])
    t0 = time.time()
    try:
        evaluation = R.train(events, item_ids, text, split.training_cutoff, targets, rc, codes=codes, image=image,
                             progress=False)
        serving = R.train(events, item_ids, text, split.end, targets, rc, codes=codes, image=image, progress=False)
    except R.NotEnoughBehaviour as exc:  # a tiny slice: the unrefined profiles stay the only ones
        context.log.warning(str(exc))
        return MaterializeResult(metadata={"enabled": True, "skipped": str(exc)})
    train_s = time.time() - t0

    meta: dict = {"enabled": True, "config": MetadataValue.json(rc.as_dict()), "device": evaluation.device,
                  "items_with_image": n_images, "train_examples": evaluation.n_examples, "train_seconds": round(train_s, 1),
                  "final_loss": round(evaluation.losses[-1], 4) if evaluation.losses else None}
    test_t = eligible_targets(events, split.test, targets)
    if test_t:
        n_boot, seed = int(cfg["evaluation"]["bootstrap"]), int(cfg["evaluation"]["seed"])
        pc = cfg["profiles"]
        refined = E.per_user_metrics(R.refined_lists(evaluation, events, item_ids, split.training_cutoff,
                                                     list(test_t)), test_t)
        unrefined = E.per_user_metrics(R.unrefined_lists(events, item_ids, text, split.training_cutoff, list(test_t),
                                                         pc["event_weights"], pc["half_life_days"]), test_t)
        diff = E.paired_difference(refined["recall@20"], unrefined["recall@20"], n_boot, seed)
        meta.update({
            "test_users": len(test_t),
            "recall@20_refined": float(refined["recall@20"].mean()),
            "recall@20_unrefined": float(unrefined["recall@20"].mean()),
            "ndcg@10_refined": float(refined["ndcg@10"].mean()),
            "ndcg@10_unrefined": float(unrefined["ndcg@10"].mean()),
            "recall@20_difference": MetadataValue.json(diff),
        })
        context.log.info(f"embedding retrieval on the test window: Recall@20 refined {meta['recall@20_refined']:.4f} "
                         f"vs unrefined {meta['recall@20_unrefined']:.4f} ({json.dumps(diff)})")
    users, vecs = [], []
    for snapshot, model, as_of in (("evaluation", evaluation, split.training_cutoff), ("serving", serving, split.end)):
        u, v = _vectors(model, events, item_ids, as_of, snapshot)
        users.append(u)
        vecs.append(v)
    users_df, items_df = pd.concat(users, ignore_index=True), pd.concat(vecs, ignore_index=True)
    warehouse.replace(settings, {"refined_user_vectors": with_vectors(users_df, "vector"),
                                 "refined_item_vectors": with_vectors(items_df, "vector")})
    meta["dagster/row_count"] = len(users_df)
    return MaterializeResult(metadata=meta)
