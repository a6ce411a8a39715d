"""Search quality by proxy: does personalization help `/v1/search`? (no labelled search data here)

For every purchase in the test window by a user with history before it, the query is the purchased
item's leaf category name ("Men's-T-Shirts", "Drinkware", ...) and the relevant items are what that
user bought in that leaf category in the window. The user's state is the snapshot at the start of
the test window (the ranker's training cutoff), so nothing from the test window leaks in. Both runs
use the serving code (`serving.bundle.ModelBundle.search`) of the champion version: personalized
(query relevance + personal_weight x the ranker's score for the user) vs non-personalized (query
only). Reports mean NDCG@10 of both and the paired difference with a bootstrap 95% interval; the
other weights are a sensitivity check, not a tuning (the default was fixed before this ran).

    .venv/bin/python bench/search_quality.py
Writes bench/results/search_quality.json and bench/results/search_quality.md.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
SWEEP = (0.1, 0.3, 0.5, 1.0)


def ndcg_at(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    gains = [1.0 / np.log2(r + 2) for r, i in enumerate(ranked[:k]) if i in relevant]
    ideal = sum(1.0 / np.log2(r + 2) for r in range(min(len(relevant), k)))
    return float(sum(gains) / ideal) if ideal else 0.0


def main() -> int:
    from ml import registry
    from ml.pipeline import snapshot_at
    from persona.config import load_settings
    from persona.warehouse import read_df
    from serving.bundle import ModelBundle, leaf_category

    settings = load_settings()
    version_dir = registry.champion_dir(settings.models_dir)
    manifest = json.loads((version_dir / "manifest.json").read_text())
    test_start = pd.Timestamp(manifest["training_cutoff"])
    db = settings.warehouse_path
    events = read_df(db, "select user_id, session_id, ts, event_type, item_id, price from fct_events "
                         "where item_id is not null order by ts, event_id")
    events["ts"] = pd.to_datetime(events["ts"])
    items = read_df(db, "select item_id, title, category_path, brand, price from dim_items order by item_id")
    emb = read_df(db, "select item_id, embedding from item_embeddings order by item_id")
    item_ids = emb["item_id"].astype(str).tolist()
    matrix = np.vstack(emb["embedding"].map(lambda v: np.asarray(v, np.float32)))
    print(f"building the snapshot as of the test start {test_start} ...", flush=True)
    tsnap = snapshot_at(events, items, item_ids, matrix, test_start, settings.data)

    bundle = ModelBundle(version_dir, settings.data, providers=["CPUExecutionProvider"])
    if list(bundle.snapshot.item_ids) != list(tsnap.item_ids):
        raise SystemExit("the version's catalog differs from the warehouse's: rerun `persona run` first")
    bundle.snapshot, bundle.as_of = tsnap, tsnap.as_of  # same catalog and embeddings, state as of the test start

    cats = dict(zip(items["item_id"].astype(str), items["category_path"]))
    test = events[(events["ts"] >= test_start) & (events["event_type"] == "purchase") & events["user_id"].notna()]
    bought: dict[tuple[str, str], set[str]] = defaultdict(set)
    for user, item in zip(test["user_id"].astype(str), test["item_id"].astype(str)):
        leaf = leaf_category(cats.get(item))
        if leaf and user in tsnap.user_index:
            bought[(user, leaf)].add(item)
    if not bought:
        raise SystemExit("no test-window purchases by users with history")
    queries = sorted(bought)
    print(f"{len(queries)} (user, query) pairs from {test['user_id'].nunique()} purchasing users", flush=True)

    per = {"query_only": [], **{f"personal_{w}": [] for w in SWEEP}}
    for user, q in queries:
        rel = bought[(user, q)]
        per["query_only"].append(ndcg_at(bundle.search(None, q, 10).items, rel))
        for w in SWEEP:
            per[f"personal_{w}"].append(ndcg_at(bundle.search(user, q, 10, personal_weight=w).items, rel))
    arr = {k: np.array(v) for k, v in per.items()}
    default_w = bundle.personal_weight
    key = f"personal_{default_w}"
    if key not in arr:
        arr[key] = np.array([ndcg_at(bundle.search(u, q, 10).items, bought[(u, q)]) for u, q in queries])
    rng = np.random.default_rng(7)
    diff = arr[key] - arr["query_only"]
    boots = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
    out = {"model_version": version_dir.name, "pairs": len(queries), "users": len({u for u, _ in queries}),
           "default_personal_weight": default_w,
           "ndcg@10": {"personalized": round(float(arr[key].mean()), 4),
                       "non_personalized": round(float(arr["query_only"].mean()), 4)},
           "difference": {"mean": round(float(diff.mean()), 4),
                          "ci95": [round(float(np.percentile(boots, 2.5)), 4), round(float(np.percentile(boots, 97.5)), 4)]},
           "ratio": round(float(arr[key].mean() / max(arr["query_only"].mean(), 1e-12)), 3),
           "sensitivity": {k: round(float(v.mean()), 4) for k, v in arr.items()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "search_quality.json").write_text(json.dumps(out, indent=2))
    md = ["# Search quality (proxy)", "",
          "Query = the leaf category name of an item bought in the test window; relevant = what that user bought "
          "in that leaf category; user state as of the test start. Same serving code both ways.", "",
          f"Model version `{out['model_version']}`, {out['pairs']} (user, query) pairs, {out['users']} users.", "",
          "| search | NDCG@10 |", "|---|---|",
          f"| non-personalized (query only) | {out['ndcg@10']['non_personalized']} |",
          f"| personalized (personal_weight {default_w}) | {out['ndcg@10']['personalized']} |", "",
          f"Personalized - non-personalized: {out['difference']['mean']:+.4f} "
          f"[{out['difference']['ci95'][0]:+.4f}, {out['difference']['ci95'][1]:+.4f}] (paired bootstrap 95%); "
          f"ratio {out['ratio']}x.", "",
          "Sensitivity to personal_weight (not used to choose it): " +
          ", ".join(f"{k} {v}" for k, v in out["sensitivity"].items()), ""]
    (RESULTS / "search_quality.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
