"""Does the refined profile help the *ranker*? The same ranker trained twice on the same split.

    python bench/refinement_ranker.py [--datasets ga,uci]

`bench/refinement.py` shows the two-tower refinement beats the unrefined profile in embedding retrieval.
This bench asks the next question: with the refined vectors in every ranking snapshot (the `embedding`
candidate source and the `emb_sim` / `emb_rank` features use refined user · refined item instead of
profile · text embedding; one refinement trained per window, on events strictly before its cutoff),
does the LightGBM ranker's test NDCG@10 rise? Everything else — split, candidates, features, grid,
bootstrap — is `ml.pipeline.train_and_evaluate` unchanged. Writes bench/results/refinement_ranker.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from data_contracts.adapters import ADAPTERS  # noqa: E402
from ml import evaluation as E  # noqa: E402
from ml import pipeline as P  # noqa: E402
from ml import refine as R  # noqa: E402
from ml.embeddings import TextEncoder, embed_items, embedding_matrix  # noqa: E402
from ml.fusion import structured_codes  # noqa: E402
from ml.snapshot import build_snapshot  # noqa: E402
from persona.config import load_settings  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from quality import bench_meta, datasets, for_each_dataset, merge  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def refined_snapshot_fn(rc: R.RefineConfig, codes: np.ndarray | None, seconds: list[float]):
    """A drop-in for ml.pipeline.snapshot_at whose profile and item vectors come from a refinement trained at as_of."""

    def snapshot_at(events, items, item_ids, item_matrix, as_of, cfg):
        t = time.time()
        ref = R.train(events, item_ids, item_matrix, as_of, list(cfg["targets"]), rc, codes=codes, progress=False)
        prep = R.prepare(events, item_ids, as_of, [], ref.type_names)
        users, hist = R.cutoff_histories(prep, prep.user_ids.tolist(), rc.max_history)
        snap = build_snapshot(events, items, item_ids, ref.item_matrix(), users, ref.user_matrix(hist), as_of, cfg)
        seconds.append(time.time() - t)
        return snap

    return snapshot_at


def run_dataset(name: str, spec: dict, base: dict) -> dict:
    cfg = merge(base, spec["overrides"])
    print(f"\n== {name}: {spec['path']}", flush=True)
    loaded = ADAPTERS[spec["adapter"]](spec["path"])
    events = loaded.events.to_pandas()
    events = events[events["item_id"].notna()].sort_values("ts", kind="stable").reset_index(drop=True)
    items = loaded.items.to_pandas()
    emb, _ = embed_items(items, TextEncoder(cfg["encoder"]["model"]))
    item_ids, text = embedding_matrix(emb)
    rc = R.config_from_settings(cfg)
    catalog = items.drop_duplicates("item_id").assign(item_id=lambda d: d["item_id"].astype(str)).set_index("item_id")
    codes = (structured_codes(catalog.reindex(item_ids).reset_index(), n_buckets=rc.n_buckets)
             if rc.item_tower == "fused" else None)
    out: dict = {}
    per_user: dict = {}
    original = P.snapshot_at
    for variant in ("text profile", "refined profile"):
        seconds: list[float] = []
        P.snapshot_at = refined_snapshot_fn(rc, codes, seconds) if variant == "refined profile" else original
        t0 = time.time()
        try:
            r = P.train_and_evaluate(events, items, item_ids, text, cfg, log=lambda m: print("  " + m, flush=True))
        finally:
            P.snapshot_at = original
        per_user[variant] = r.per_user["ranker"]["ndcg@10"]
        out[variant] = {"ndcg@10": r.metrics["ranker"]["ndcg@10"], "ndcg@10_ci": r.metrics["ranker"]["ndcg@10_ci"],
                        "recall@20": r.metrics["ranker"]["recall@20"],
                        "vs_best_baseline": r.metrics["ranker"]["vs_best_baseline"],
                        "candidate_recall": r.candidate_recall, "ranker_params": r.counts["ranker_params"],
                        "seconds": round(time.time() - t0, 1), "refinement_seconds": round(sum(seconds), 1),
                        "test_users": r.counts["test_users"]}
        print(f"  {variant}: NDCG@10 {out[variant]['ndcg@10']:.4f}, embedding-source recall "
              f"{r.candidate_recall['embedding']:.3f}, union {r.candidate_recall['union']:.3f}", flush=True)
    n_boot, seed = int(cfg["evaluation"]["bootstrap"]), int(cfg["evaluation"]["seed"])
    out["refined - text (paired)"] = E.paired_difference(per_user["refined profile"], per_user["text profile"],
                                                         n_boot, seed)
    return out


def markdown(results: dict, meta: dict) -> str:
    lines = [f"# Refined profiles inside the ranker — {meta['date']}", "",
             f"Machine: {meta['machine']}. Command: `python bench/refinement_ranker.py`. The ranker pipeline of "
             "`make run` trained twice on the same split: snapshots with the text profile (as shipped) and with the "
             "refinement's user and item vectors (one refinement per window, trained before its cutoff) feeding the "
             "`embedding` candidate source and the `emb_sim` / `emb_rank` features.", ""]
    for name, r in results.items():
        if "skipped" in r:
            lines += [f"## {name}", "", f"Skipped: {r['skipped']}", ""]
            continue
        lines += [f"## {name}", "", f"{r['text profile']['test_users']} test users.", "",
                  "| snapshot vectors | ranker NDCG@10 [95% CI] | Recall@20 | embedding-source recall | union recall | "
                  "extra seconds (refinement) |", "|---|---|---|---|---|---|"]
        for v in ("text profile", "refined profile"):
            m = r[v]
            lines.append(f"| {v} | {m['ndcg@10']:.4f} [{m['ndcg@10_ci'][0]:.3f}, {m['ndcg@10_ci'][1]:.3f}] | "
                         f"{m['recall@20']:.4f} | {m['candidate_recall']['embedding']:.3f} | "
                         f"{m['candidate_recall']['union']:.3f} | {m['refinement_seconds']} |")
        d = r["refined - text (paired)"]
        verdict = ("the refined vectors help the ranker: worth feeding them to the snapshots" if d["ci"][0] > 0 else
                   "the refined vectors hurt the ranker" if d["ci"][1] < 0 else
                   "no difference the test window can see: the ranker keeps the text profile (cheaper, no "
                   "refinement per training window)")
        lines += ["", f"Refined − text, ranker NDCG@10: {d['mean']:+.4f}, paired 95% CI [{d['ci'][0]:+.4f}, "
                      f"{d['ci'][1]:+.4f}]: {verdict}.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", default="ga")
    parser.add_argument("--render", action="store_true", help="rewrite the .md from the saved .json, no training")
    args = parser.parse_args()
    if args.render:
        saved = json.loads((RESULTS / "refinement_ranker.json").read_text())
        (RESULTS / "refinement_ranker.md").write_text(markdown(saved["datasets"], saved["meta"]))
        return 0
    base = load_settings().data
    results = for_each_dataset(args.datasets, datasets(), lambda name, spec: run_dataset(name, spec, base))
    meta = bench_meta()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "refinement_ranker.json").write_text(json.dumps({"meta": meta, "datasets": results}, indent=2,
                                                                default=float))
    (RESULTS / "refinement_ranker.md").write_text(markdown(results, meta))
    print(markdown(results, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
