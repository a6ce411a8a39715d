"""Profile refinement against the unrefined profile: embedding retrieval on the temporal split.

    python bench/refinement.py [--datasets ga,uci] [--max-epochs 6]

Per dataset: the unrefined profile (`ml.profiles.user_vectors` · item text embeddings, cosine top 20)
and each refinement configuration of `ml.refine`, on the same test users and targets, inputs strictly
before the test window. Each configuration's epoch count is chosen on the validation window (model
trained on events before the validation window), then the model is retrained on events before the
test window with that count and evaluated once. Reports Recall@20 and NDCG@10 with bootstrap 95%
intervals, the paired difference to unrefined, and training time (CPU seconds of this process and
wall seconds). Writes bench/results/refinement.json and refinement.md.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from ml import evaluation as E  # noqa: E402
from ml import refine as R  # noqa: E402
from ml.embeddings import TextEncoder, embed_items, embedding_matrix  # noqa: E402
from ml.fusion import structured_codes  # noqa: E402
from ml.pipeline import split_for  # noqa: E402
from ml.split import eligible_targets  # noqa: E402
from persona.config import load_settings  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from quality import bench_meta, for_each_dataset, merge  # noqa: E402

RESULTS = ROOT / "bench" / "results"
KEYS = ("recall@20", "ndcg@10")
CONFIGS = {
    "text + attention": {"item_tower": "text", "user_tower": "attention"},
    "fused + attention": {"item_tower": "fused", "user_tower": "attention"},
    "fused + gru": {"item_tower": "fused", "user_tower": "gru"},
}


def datasets() -> dict:
    """The data of bench/quality.py with the split overrides only (refinement uses no candidates or ranker)."""
    from data_contracts.adapters import ADAPTERS

    shared = ROOT.parent / "shared" / "datasets"
    ga_shared = shared / "google_analytics_merch_store" / "product_events_2016-08_2016-10.parquet"
    ga = ga_shared if ga_shared.exists() else ROOT / "data" / "ga_merch_store" / "product_events_2016-08_2016-10.parquet"
    uci_adapter = next((n for n in ADAPTERS if "uci" in n), None)
    return {
        "ga_merch_store": {"adapter": "ga_merch_product_events", "path": ga, "overrides": {}},
        "uci_online_retail": {"adapter": uci_adapter, "path": shared / "uci_online_retail" / "online_retail.csv.gz",
                              "overrides": {"targets": ["purchase"],
                                            "split": {"test_days": 28, "valid_days": 28, "train_days": 28,
                                                      "train_windows": 3}}},
    }


def load(spec: dict, cfg: dict):
    from data_contracts.adapters import ADAPTERS

    loaded = ADAPTERS[spec["adapter"]](spec["path"])
    events = loaded.events.to_pandas()
    events = events[events["item_id"].notna()].sort_values("ts", kind="stable").reset_index(drop=True)
    items = loaded.items.to_pandas()
    enc = cfg["encoder"]
    table, _ = embed_items(items, TextEncoder(enc["model"], device=enc["device"], batch_size=enc["batch_size"],
                                              max_length=enc["max_length"]))
    item_ids, text = embedding_matrix(table)
    catalog = items.drop_duplicates("item_id").assign(item_id=lambda d: d["item_id"].astype(str)).set_index("item_id")
    codes = structured_codes(catalog.reindex(item_ids).reset_index())
    return events, item_ids, text, codes


def run_dataset(name: str, spec: dict, base: dict, max_epochs: int, configs: dict) -> dict:
    t_start = time.time()
    cfg = merge(base, spec["overrides"])
    print(f"\n== {name}: {spec['path']}", flush=True)
    events, item_ids, text, codes = load(spec, cfg)
    split = split_for(events, cfg)
    targets = list(cfg["targets"])
    valid_t = eligible_targets(events, split.valid, targets)
    test_t = eligible_targets(events, split.test, targets)
    pc = cfg["profiles"]
    n_boot, seed = int(cfg["evaluation"]["bootstrap"]), int(cfg["evaluation"]["seed"])
    print(f"  {len(item_ids)} items, {len(valid_t)} valid users, {len(test_t)} test users", flush=True)

    def per_user(lists, tgt):
        pu = E.per_user_metrics(lists, tgt)
        return {k: pu[k] for k in KEYS}

    base_valid = per_user(R.unrefined_lists(events, item_ids, text, split.valid.start, list(valid_t),
                                            pc["event_weights"], pc["half_life_days"]), valid_t)
    base_test = per_user(R.unrefined_lists(events, item_ids, text, split.test.start, list(test_t),
                                           pc["event_weights"], pc["half_life_days"]), test_t)
    rows = {"unrefined": {"valid_recall@20": float(base_valid["recall@20"].mean()),
                          **E.summarize(base_test, n_boot, seed)}}
    print(f"  unrefined: valid recall@20 {rows['unrefined']['valid_recall@20']:.4f}, "
          f"test recall@20 {rows['unrefined']['recall@20']:.4f}", flush=True)
    vocab = R.type_vocabulary(pc["event_weights"])
    prep_valid = R.prepare(events, item_ids, split.valid.start, [], vocab)
    prep_test = R.prepare(events, item_ids, split.test.start, [], vocab)

    for label, overrides in configs.items():
        rc = R.RefineConfig(**overrides, epochs=max_epochs, event_weights=dict(pc["event_weights"]),
                            half_life_days=float(pc["half_life_days"]), seed=seed)
        curve = []

        def on_epoch(epoch, refined):
            lists = R.refined_lists(refined, None, item_ids, split.valid.start, list(valid_t), prepared=prep_valid)
            curve.append(float(per_user(lists, valid_t)["recall@20"].mean()))

        R.train(events, item_ids, text, split.valid.start, targets, rc, codes=codes, progress=False, on_epoch=on_epoch)
        best_epoch = int(np.argmax(curve))  # first maximum: the fewest epochs reaching it
        final = R.with_overrides(rc, epochs=best_epoch)
        cpu0, wall0 = time.process_time(), time.time()
        refined = R.train(events, item_ids, text, split.test.start, targets, final, codes=codes, progress=False)
        cpu, wall = time.process_time() - cpu0, time.time() - wall0
        pu = per_user(R.refined_lists(refined, None, item_ids, split.test.start, list(test_t), prepared=prep_test),
                      test_t)
        row = E.summarize(pu, n_boot, seed)
        row.update({
            "config": final.as_dict(), "valid_recall@20_by_epoch": curve, "best_epoch": best_epoch,
            "valid_recall@20": curve[best_epoch], "n_train_examples": refined.n_examples,
            "train_cpu_s": round(cpu, 1), "train_wall_s": round(wall, 1), "device": refined.device,
            "vs_unrefined": {k: E.paired_difference(pu[k], base_test[k], n_boot, seed) for k in KEYS},
        })
        rows[label] = row
        d = row["vs_unrefined"]["recall@20"]
        print(f"  {label}: valid curve {[round(c, 4) for c in curve]} -> {best_epoch} epochs; test recall@20 "
              f"{row['recall@20']:.4f} (diff {d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]), "
              f"train {cpu:.0f} s CPU / {wall:.0f} s wall", flush=True)

    wins = [m for m in configs if rows[m]["vs_unrefined"]["recall@20"]["ci"][0] > 0]
    best = max(configs, key=lambda m: rows[m]["valid_recall@20"])
    return {"n_items": len(item_ids), "n_valid_users": len(valid_t), "n_test_users": len(test_t),
            "targets": targets, "split": split.as_dict(), "models": rows,
            "chosen_on_valid": best, "beats_unrefined_ci": wins, "seconds": round(time.time() - t_start, 1)}


def markdown(results: dict, meta: dict) -> str:
    lines = [f"# Profile refinement — {meta['date']}", "",
             f"Machine: {meta['machine']}. Command: `python bench/refinement.py`. Embedding retrieval (top 20 of the "
             "whole catalog by cosine), temporal split; epochs chosen on the validation window, one test evaluation.",
             ""]
    for name, r in results.items():
        if "skipped" in r:
            lines += [f"## {name}", "", f"Skipped: {r['skipped']}", ""]
            continue
        lines += [f"## {name}", "",
                  f"{r['n_items']} items, {r['n_test_users']} test users ({r['n_valid_users']} validation users); "
                  f"targets {r['targets']}; test window {r['split']['test']['start'][:10]} .. "
                  f"{r['split']['test']['end'][:10]}.", "",
                  "| profile | valid R@20 | epochs | test Recall@20 [95% CI] | test NDCG@10 [95% CI] "
                  "| ΔRecall@20 vs unrefined [paired 95% CI] | ΔNDCG@10 [paired 95% CI] | train CPU s / wall s |",
                  "|---|---|---|---|---|---|---|---|"]
        for model, m in r["models"].items():
            rec, nd = m["recall@20_ci"], m["ndcg@10_ci"]
            if model == "unrefined":
                lines.append(f"| unrefined | {m['valid_recall@20']:.4f} | – | {m['recall@20']:.4f} [{rec[0]:.3f}, "
                             f"{rec[1]:.3f}] | {m['ndcg@10']:.4f} [{nd[0]:.3f}, {nd[1]:.3f}] | – | – | – |")
                continue
            dr, dn = m["vs_unrefined"]["recall@20"], m["vs_unrefined"]["ndcg@10"]
            lines.append(f"| {model} | {m['valid_recall@20']:.4f} | {m['best_epoch']} | {m['recall@20']:.4f} "
                         f"[{rec[0]:.3f}, {rec[1]:.3f}] | {m['ndcg@10']:.4f} [{nd[0]:.3f}, {nd[1]:.3f}] | "
                         f"{dr['mean']:+.4f} [{dr['ci'][0]:+.4f}, {dr['ci'][1]:+.4f}] | {dn['mean']:+.4f} "
                         f"[{dn['ci'][0]:+.4f}, {dn['ci'][1]:+.4f}] | {m['train_cpu_s']} / {m['train_wall_s']} |")
        wins = ", ".join(r["beats_unrefined_ci"]) or "none"
        lines += ["", f"Configuration chosen on the validation window: **{r['chosen_on_valid']}**. Beats unrefined "
                  f"Recall@20 with the paired interval above zero: {wins}.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", default="ga,uci")
    parser.add_argument("--max-epochs", type=int, default=6)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    configs = {k.strip(): CONFIGS[k.strip()] for k in args.configs.split(",")}
    base = load_settings().data
    results = for_each_dataset(args.datasets, datasets(),
                               lambda name, spec: run_dataset(name, spec, base, args.max_epochs, configs))
    meta = bench_meta(max_epochs=args.max_epochs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    previous = RESULTS / "refinement.json"
    if previous.exists():  # datasets not rerun keep their last results
        kept = json.loads(previous.read_text()).get("datasets", {})
        results = {**{k: v for k, v in kept.items() if k not in results}, **results}
    (RESULTS / "refinement.json").write_text(json.dumps({"meta": meta, "datasets": results}, indent=2, default=str))
    md = markdown(results, meta)
    (RESULTS / "refinement.md").write_text(md)
    print("\n" + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
