"""Ranking quality, Persona's ranker against its peers, on the same split, users and metrics.

    python bench/quality.py [--datasets ga,uci] [--no-ablations]   (make bench-quality)

Per dataset: the ranker and the baselines from `ml.pipeline.train_and_evaluate`, the tuned peers
from `ml.peers` (ALS, BPR, session-kNN), metrics for all items and for new items only, catalog
coverage, popularity bias, bootstrap 95% intervals, the paired difference to the best peer,
candidate recall per source, and ablations. Writes bench/results/quality.json and quality.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from data_contracts.adapters import ADAPTERS  # noqa: E402
from ml import evaluation as E  # noqa: E402
from ml.embeddings import TextEncoder, embed_items, embedding_matrix  # noqa: E402
from ml.candidates import SOURCES  # noqa: E402
from ml.features import FEATURE_GROUPS, FEATURES  # noqa: E402
from ml.peers import tune_and_evaluate  # noqa: E402
from ml.pipeline import evaluate_lists, train_and_evaluate  # noqa: E402
from ml.ranker import RankingData, booster_scorer, rank_lists, train_ranker  # noqa: E402
from persona.config import load_settings  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "bench" / "results"
KEYS = ("ndcg@10", "recall@20", "mrr@20", "hitrate@10")


def datasets() -> dict:
    ga_shared = SHARED / "google_analytics_merch_store" / "product_events_2016-08_2016-10.parquet"
    ga = ga_shared if ga_shared.exists() else ROOT / "data" / "ga_merch_store" / "product_events_2016-08_2016-10.parquet"
    uci_adapter = next((n for n in ADAPTERS if "uci" in n), None)
    return {
        "ga_merch_store": {"adapter": "ga_merch_product_events", "path": ga, "overrides": {}},
        "uci_online_retail": {"adapter": uci_adapter, "path": SHARED / "uci_online_retail" / "online_retail.csv.gz",
                              "overrides": {"targets": ["purchase"],
                                            "split": {"test_days": 28, "valid_days": 28, "train_days": 28,
                                                      "train_windows": 3},
                                            # customers reorder from long histories: keep all of it; ALS
                                            # parameters = the ALS peer's choice on UCI's validation window
                                            "candidates": {"repeat": 300, "als": 100, "als_factors": 64,
                                                           "als_regularization": 1.0, "als_alpha": 1.0},
                                            # 2 x fewer fits than the default grid: UCI has ~40x GA's rows
                                            "ranker": {"grid": [{}, {"num_leaves": 15, "min_child_samples": 50}]}}},
    }


DATASET_KEYS = {"ga": "ga_merch_store", "uci": "uci_online_retail"}


def for_each_dataset(keys: str, specs: dict, run) -> dict:
    """`run(name, spec)` for each requested dataset (`ga,uci`) of `specs`; one that is not here is recorded as
    skipped."""
    results = {}
    for key in keys.split(","):
        name = DATASET_KEYS[key.strip()]
        spec = specs[name]
        if spec["adapter"] is None or not Path(spec["path"]).exists():
            why = "no adapter registered" if spec["adapter"] is None else f"{spec['path']} not found (../shared absent)"
            print(f"\n== {name}: skipped, {why}")
            results[name] = {"skipped": why}
            continue
        results[name] = run(name, spec)
    return results


def bench_meta(**extra) -> dict:
    """Date and machine of a bench run, for the committed results."""
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}", **extra}


def merge(cfg: dict, overrides: dict) -> dict:
    out = copy.deepcopy(cfg)
    for k, v in overrides.items():
        if isinstance(v, dict):
            out[k] = merge(out.get(k, {}), v)
        else:
            out[k] = v
    return out


def window_ndcg(model, data, snap, targets: dict[str, set[str]]) -> float:
    """NDCG@10 of `model`'s top 20 over every user with a target in the window (a user without a candidate
    group scores 0): the test metric, also computed on the validation window so that variants with
    different candidate sets compare on the same users (LightGBM's own validation NDCG scores a group
    whose positives a variant dropped as 1)."""
    lists = rank_lists(data, booster_scorer(model)(data.X), snap) if data.n_rows else {}
    named = {u: [str(snap.item_ids[i]) for i in l] for u, l in lists.items()}
    return float(E.per_user_metrics(named, targets)["ndcg@10"].mean())


def _retrain_and_test(result, cfg: dict, train, valid, test) -> tuple[float, float]:
    """Retrain with the chosen ranker params on (train, valid); (validation, test) NDCG@10 (window_ndcg)."""
    model = train_ranker(train, valid, merge(cfg, {"ranker": result.counts["ranker_params"]}), log=lambda m: None)
    return (window_ndcg(model, valid, result.valid_snapshot, result.valid_targets),
            window_ndcg(model, test, result.test_snapshot, result.test_targets))


def ablate_features(result, cfg: dict, drop: list[str]) -> tuple[float, float]:
    """Retrain with `drop` columns held constant (so no split can use them); (valid, test) NDCG@10."""
    cols = [FEATURES.index(f) for f in drop]
    train, valid, test = (copy.copy(d) for d in (result.train, result.valid, result.test))
    for d in (train, valid, test):
        d.X = d.X.copy()
        d.X[:, cols] = 0.0
    return _retrain_and_test(result, cfg, train, valid, test)


def without_source(data, j: int):
    """The same ranking rows minus the candidates only source `j` proposed; n_sources recounted without it."""
    keep = data.sources.any(axis=1) & ~(data.sources[:, j] & (data.sources.sum(axis=1) == 1))
    group_of = np.repeat(np.arange(len(data.groups)), data.groups)
    X = data.X[keep].copy()
    src = data.sources[keep].copy()
    src[:, j] = False
    X[:, FEATURES.index("n_sources")] = src.sum(axis=1)
    groups = np.bincount(group_of[keep], minlength=len(data.groups))
    users = [u for u, g in zip(data.users, groups) if g > 0]
    return RankingData(X, data.y[keep], groups[groups > 0], users, data.items[keep], src)


def ablate_source(result, cfg: dict, j: int) -> tuple[float, float]:
    """Retrain (chosen params) without source `j`'s own candidates; its features stay. (valid, test) NDCG@10."""
    train, valid, test = (without_source(d, j) for d in (result.train, result.valid, result.test))
    return _retrain_and_test(result, cfg, train, valid, test)


def ceilings(result, history: dict[str, set[str]]) -> dict:
    """Where the gap is: share of targets never seen by the user, and the best NDCG@10 any ranker could reach
    with (a) this candidate set, (b) only the user's own past items (a perfect repeat recommender)."""
    snap, targets = result.test_snapshot, result.test_targets
    offsets = np.concatenate([[0], np.cumsum(result.test.groups)])
    row = {u: j for j, u in enumerate(result.test.users)}
    n_new = n_all = 0
    cand_ndcg, repeat_ndcg = [], []
    for u, rel in sorted(targets.items()):
        n_all += len(rel)
        n_new += len(rel - history[u])
        j = row.get(u)
        cands = {str(snap.item_ids[i]) for i in result.test.items[offsets[j]:offsets[j + 1]]} if j is not None else set()
        cand_ndcg.append(E.ndcg_at_k(sorted(rel & cands), rel, 10))
        repeat_ndcg.append(E.ndcg_at_k(sorted(rel & history[u]), rel, 10))
    return {"share_new_targets": n_new / max(n_all, 1), "oracle_ndcg@10_candidates": float(np.mean(cand_ndcg)),
            "oracle_ndcg@10_repeat_only": float(np.mean(repeat_ndcg))}


def run_dataset(name: str, spec: dict, base_cfg: dict, ablations: bool, emb_cache: str | None = None) -> dict:
    t0 = time.time()
    cfg = merge(base_cfg, spec["overrides"])
    print(f"\n== {name}: {spec['path']}", flush=True)
    loaded = ADAPTERS[spec["adapter"]](spec["path"])
    events = loaded.events.to_pandas()
    events = events[events["item_id"].notna()].sort_values("ts", kind="stable").reset_index(drop=True)
    items = loaded.items.to_pandas()
    cache_file = Path(emb_cache) / f"{name}.parquet" if emb_cache else None
    cache = pd.read_parquet(cache_file) if cache_file is not None and cache_file.exists() else None
    emb, _ = embed_items(items, TextEncoder(cfg["encoder"]["model"]), cache=cache)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        emb.to_parquet(cache_file, index=False)
    item_ids, matrix = embedding_matrix(emb)
    result = train_and_evaluate(events, items, item_ids, matrix, cfg, log=lambda m: print("  " + m, flush=True))
    snap = result.test_snapshot
    lists = {"persona_ranker": None}
    ranked = rank_lists(result.test, booster_scorer(result.model)(result.test.X), snap)
    lists["persona_ranker"] = {u: [str(snap.item_ids[i]) for i in l] for u, l in ranked.items()}
    from ml.pipeline import rankings_for

    lists["popularity_recent"] = rankings_for(snap, result.test_targets, E.baseline_popularity)
    order = np.argsort(-snap.item_feat[:, 2], kind="stable")  # all-time interactions
    lists["popularity_global"] = {u: [str(snap.item_ids[i]) for i in order[:20]] for u in result.test_targets}
    lists["repeat"] = rankings_for(snap, result.test_targets, E.baseline_repeat)
    lists["covisitation"] = rankings_for(snap, result.test_targets, E.baseline_covisitation)
    peer_lists, chosen, tables = tune_and_evaluate(events, result.valid_snapshot, result.valid_targets, snap,
                                                   result.test_targets, cfg, log=lambda m: print("  " + m, flush=True))
    lists.update(peer_lists)

    per_user, metrics = evaluate_lists(lists, result.test_targets, cfg)
    history = {u: {str(snap.item_ids[i]) for i in snap.history(snap.user_index[u])[0]} for u in result.test_targets}
    pop_pct = {str(snap.item_ids[i]): 1.0 - r / max(snap.n_items - 1, 1) for i, r in enumerate(snap.pop_rank)}
    new_metrics = {}
    for model, l in lists.items():
        metrics[model]["coverage@10"] = E.catalog_coverage(l, snap.n_items)
        metrics[model]["popularity_bias@10"] = E.popularity_bias(l, pop_pct)
        nl, nt = E.new_items_only(l, result.test_targets, history)
        new_metrics[model] = {k: float(v.mean()) for k, v in E.per_user_metrics(nl, nt).items()}
        new_metrics[model]["n_users"] = len(nt)
    peers = [m for m in lists if m != "persona_ranker"]
    best = max(peers, key=lambda m: metrics[m]["ndcg@10"])
    n_boot, seed = int(cfg["evaluation"]["bootstrap"]), int(cfg["evaluation"]["seed"])
    diff = E.paired_difference(per_user["persona_ranker"]["ndcg@10"], per_user[best]["ndcg@10"], n_boot, seed)
    out = {
        "n_test_users": len(result.test_targets), "split": result.split.as_dict(), "targets": cfg["targets"],
        "models": metrics, "new_items_only": new_metrics, "best_peer": best,
        "ratio_to_best_peer": metrics["persona_ranker"]["ndcg@10"] / max(metrics[best]["ndcg@10"], 1e-12),
        "difference_to_best_peer": diff, "candidate_recall": result.candidate_recall, "peer_params": chosen,
        "peer_tuning": tables, "feature_importance": result.importance.head(20).to_dict(orient="records"),
        "ranker_params": result.counts["ranker_params"], "ranker_tuning": result.ranker_grid,
        "ceilings": ceilings(result, history),
        "candidates": {k: v for k, v in cfg["candidates"].items()},
    }
    if ablations:
        abl = {"full": (window_ndcg(result.model, result.valid, result.valid_snapshot, result.valid_targets),
                        metrics["persona_ranker"]["ndcg@10"])}
        abl["profile features off"] = ablate_features(result, cfg, FEATURE_GROUPS["profile"])
        abl["embedding features off"] = ablate_features(result, cfg, ["emb_sim", "emb_rank"])
        abl["peer features off"] = ablate_features(result, cfg, FEATURE_GROUPS["peer"])
        for j, source in enumerate(SOURCES):
            abl[f"{source} candidates off"] = ablate_source(result, cfg, j)
        out["ablation_ndcg@10"] = {k: v[1] for k, v in abl.items()}
        out["ablation_valid_ndcg@10"] = {k: v[0] for k, v in abl.items()}
    out["seconds"] = round(time.time() - t0, 1)
    return out


def markdown(results: dict, meta: dict) -> str:
    lines = [f"# Ranking quality — {meta['date']}", "", f"Machine: {meta['machine']}. Command: `make bench-quality`.", ""]
    for name, r in results.items():
        if "skipped" in r:
            lines += [f"## {name}", "", f"Skipped: {r['skipped']}", ""]
            continue
        lines += [f"## {name}", ""] + ([f"**{r['note']}**", ""] if r.get("note") else []) + [f"{r['n_test_users']} test users; targets {r['targets']}; test window "
                  f"{r['split']['test']['start'][:10]} .. {r['split']['test']['end'][:10]}.", "",
                  "| model | NDCG@10 [95% CI] | Recall@20 | MRR@20 | HitRate@10 | coverage@10 | pop. bias@10 | NDCG@10 new items |",
                  "|---|---|---|---|---|---|---|---|"]
        for model, m in sorted(r["models"].items(), key=lambda kv: -kv[1]["ndcg@10"]):
            lo, hi = m["ndcg@10_ci"]
            lines.append(f"| {model} | {m['ndcg@10']:.4f} [{lo:.3f}, {hi:.3f}] | {m['recall@20']:.4f} | {m['mrr@20']:.4f} "
                         f"| {m['hitrate@10']:.4f} | {m['coverage@10']:.3f} | {m['popularity_bias@10']:.3f} "
                         f"| {r['new_items_only'][model]['ndcg@10']:.4f} |")
        d = r["difference_to_best_peer"]
        lines += ["", f"Persona / best peer ({r['best_peer']}) NDCG@10: **{r['ratio_to_best_peer']:.3f}x**; "
                  f"difference {d['mean']:+.4f}, paired 95% CI [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}].", "",
                  "Candidate recall (share of test targets in the candidate set): " +
                  ", ".join(f"{k} {v:.3f}" for k, v in r["candidate_recall"].items()) + ".", "",
                  ("Ceilings: {:.0%} of test targets are items the user never touched before; NDCG@10 of a perfect "
                   "ranker over this candidate set {:.4f}; over the user's own past items only {:.4f}.".format(
                       r["ceilings"]["share_new_targets"], r["ceilings"]["oracle_ndcg@10_candidates"],
                       r["ceilings"]["oracle_ndcg@10_repeat_only"]) if "ceilings" in r else ""), "",
                  "Tuned peers (best on the validation window): " +
                  "; ".join(f"{k} {v}" for k, v in r["peer_params"].items()) + ".", "",
                  f"Ranker: LightGBM overrides chosen on the validation window {r.get('ranker_params') or 'defaults'} "
                  f"(of {len(r.get('ranker_tuning', []))} tried); candidates per source "
                  + ", ".join(f"{k} {r.get('candidates', {}).get(k, 0)}" for k in SOURCES) + "."]
        if "ablation_ndcg@10" in r:
            valid = r.get("ablation_valid_ndcg@10", {})
            lines += ["", "Ablations retrain the ranker with the chosen parameters; a source off drops the candidates "
                      "only it proposed (its features stay). NDCG@10 over every user with a target in the window, on the "
                      "validation window (what decisions may use) and on the test window.", "",
                      "| ablation | valid NDCG@10 | test NDCG@10 |", "|---|---|---|"]
            lines += [f"| {k} | {valid[k]:.4f} | {v:.4f} |" if k in valid else f"| {k} | | {v:.4f} |"
                      for k, v in r["ablation_ndcg@10"].items()]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", default="ga,uci")
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other datasets already in quality.json (run datasets in separate processes)")
    parser.add_argument("--embedding-cache", default=None,
                        help="folder of item-embedding parquet files reused by content hash (encoding UCI takes minutes)")
    args = parser.parse_args()
    base = load_settings().data
    results = for_each_dataset(args.datasets, datasets(), lambda name, spec: run_dataset(
        name, spec, base, not args.no_ablations, args.embedding_cache))
    meta = bench_meta()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.merge and (RESULTS / "quality.json").exists():
        old = json.loads((RESULTS / "quality.json").read_text())
        for name, r in old.get("datasets", {}).items():
            if name not in results and "skipped" not in r:
                results[name] = dict(old["details"][name], models={m: {k: v for k, v in mv.items() if k != "new_items_only"}
                                                                   for m, mv in r.items()},
                                     new_items_only={m: mv["new_items_only"] for m, mv in r.items()})
                results[name].setdefault("note", f"Kept from the quality.json of {old.get('meta', {}).get('date')} "
                                                 f"({old.get('meta', {}).get('machine')}): not rerun by this invocation, "
                                                 "so possibly measured with older code than the sections above.")
        results = dict(sorted(results.items()))
    by_model = {name: ({m: dict(v, new_items_only=r["new_items_only"][m]) for m, v in r["models"].items()}
                       if "models" in r else r) for name, r in results.items()}
    details = {name: {k: v for k, v in r.items() if k not in ("models", "new_items_only")} for name, r in results.items()}
    (RESULTS / "quality.json").write_text(json.dumps({"meta": meta, "datasets": by_model, "details": details},
                                                     indent=2, default=str))
    md = markdown(results, meta)
    (RESULTS / "quality.md").write_text(md)
    print("\n" + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
