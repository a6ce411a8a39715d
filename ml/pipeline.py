"""Train and evaluate the ranker on a temporal split, against baselines, as one pure function.

The Dagster asset, the benchmarks and the tests all call `train_and_evaluate`, so the numbers
in the UI, in `bench/` and in `artifacts/summary.json` come from the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ml import evaluation as ev_
from ml.candidates import generate
from ml.features import FEATURES, build_features
from ml.profiles import user_vectors
from ml.ranker import (RankingData, booster_scorer, build_ranking_data, candidate_recall, concat,
                       feature_importance, rank_lists, train_ranker, tune_ranker)
from ml.snapshot import Snapshot, build_snapshot
from ml.split import Split, Window, eligible_targets, make_split

Log = Callable[[str], None]


@dataclass
class TrainingResult:
    split: Split
    model: object
    train: RankingData
    valid: RankingData
    test: RankingData
    test_snapshot: Snapshot
    test_targets: dict[str, set[str]]
    per_user: dict[str, dict[str, np.ndarray]]
    metrics: dict
    candidate_recall: dict[str, float]
    importance: pd.DataFrame
    valid_snapshot: Snapshot | None = None
    valid_targets: dict[str, set[str]] | None = None
    reference_X: np.ndarray = None   # feature rows of users active in the training windows (drift reference)
    current_X: np.ndarray = None     # the same for the test window, the latest labelled one (drift current)
    counts: dict = field(default_factory=dict)
    ranker_grid: list = field(default_factory=list)  # [{params, valid_ndcg@10}] tried by ml.ranker.tune_ranker


def split_for(events: pd.DataFrame, cfg: dict) -> Split:
    s = cfg["split"]
    return make_split(events["ts"].min(), events["ts"].max(), s["test_days"], s["valid_days"], s["train_days"],
                      int(s.get("train_windows", 1)), s.get("train_step_days"))


def snapshot_at(events: pd.DataFrame, items: pd.DataFrame, item_ids: list[str], item_matrix: np.ndarray,
                as_of, cfg: dict) -> Snapshot:
    p = cfg["profiles"]
    users, vecs = user_vectors(events, item_ids, item_matrix, as_of, p["event_weights"], p["half_life_days"])
    return build_snapshot(events, items, item_ids, item_matrix, users, vecs, as_of, cfg)


def rankings_for(snap: Snapshot, users, fn) -> dict[str, list[str]]:
    return {u: [str(snap.item_ids[i]) for i in fn(snap, snap.user_index.get(u), 20)] for u in users}


def evaluate_lists(lists_by_model: dict[str, dict[str, list[str]]], targets: dict[str, set[str]],
                   cfg: dict) -> tuple[dict, dict]:
    n_boot, seed = int(cfg["evaluation"]["bootstrap"]), int(cfg["evaluation"]["seed"])
    per_user = {m: ev_.per_user_metrics(lists, targets) for m, lists in lists_by_model.items()}
    metrics = {m: ev_.summarize(pu, n_boot, seed) for m, pu in per_user.items()}
    return per_user, metrics


def activity_sample(snap: Snapshot, events: pd.DataFrame, window: Window, per_source: dict,
                    max_users: int = 300, seed: int = 0) -> np.ndarray:
    """Feature rows for users active in `window` with history before it, as the model would see them.

    Built the same way for every window, so training-time and latest-window rows are comparable
    for drift monitoring (no population difference between "users with a target" and "everyone").
    """
    m = (events["ts"] >= window.start) & (events["ts"] < window.end) & events["user_id"].notna()
    active = sorted(u for u in events.loc[m, "user_id"].astype(str).unique() if u in snap.user_index)
    if len(active) > max_users:
        active = sorted(np.random.default_rng(seed).choice(active, max_users, replace=False))
    rows = [build_features(snap, snap.user_index[u], generate(snap, snap.user_index[u], per_source)) for u in active]
    return np.vstack(rows) if rows else np.zeros((0, len(FEATURES)), np.float32)


def train_and_evaluate(events: pd.DataFrame, items: pd.DataFrame, item_ids: list[str], item_matrix: np.ndarray,
                       cfg: dict, log: Log = print) -> TrainingResult:
    split = split_for(events, cfg)
    targets_types = list(cfg["targets"])
    per_source = cfg["candidates"]
    parts, reference = [], []
    for w in split.train:
        snap = snapshot_at(events, items, item_ids, item_matrix, w.start, cfg)
        reference.append(activity_sample(snap, events, w, per_source))
        data = build_ranking_data(snap, eligible_targets(events, w, targets_types), per_source, require_positive=True)
        log(f"{w.name} window {w.start:%Y-%m-%d}..{w.end:%Y-%m-%d}: {len(data.users)} training groups, {data.n_rows:,} rows")
        parts.append(data)
    train = concat(parts) if any(p.n_rows for p in parts) else parts[0]
    vsnap = snapshot_at(events, items, item_ids, item_matrix, split.valid.start, cfg)
    valid_targets = eligible_targets(events, split.valid, targets_types)
    valid = build_ranking_data(vsnap, valid_targets, per_source, require_positive=True)
    log(f"valid window: {len(valid.users)} groups, {valid.n_rows:,} rows")
    tsnap = snapshot_at(events, items, item_ids, item_matrix, split.test.start, cfg)
    test_targets = eligible_targets(events, split.test, targets_types)
    test = build_ranking_data(tsnap, test_targets, per_source)
    current = activity_sample(tsnap, events, split.test, per_source)
    log(f"test window: {len(test_targets)} users with a target and history, {test.n_rows:,} candidate rows")
    if not test_targets:
        raise ValueError("no test users: nobody has a target event in the test window and history before it")

    # fit looks train_ranker up at call time, so a test can substitute ml.pipeline.train_ranker
    model, ranker_params, ranker_tried = tune_ranker(train, valid, cfg, log, fit=lambda *a: train_ranker(*a))
    scores = booster_scorer(model)(test.X)
    lists = {"ranker": {u: [str(tsnap.item_ids[i]) for i in l] for u, l in rank_lists(test, scores, tsnap).items()}}
    for name, fn in ev_.BASELINES.items():
        lists[name] = rankings_for(tsnap, test_targets, fn)
    per_user, metrics = evaluate_lists(lists, test_targets, cfg)
    best = max(ev_.BASELINES, key=lambda b: metrics[b]["ndcg@10"])
    n_boot, seed = int(cfg["evaluation"]["bootstrap"]), int(cfg["evaluation"]["seed"])
    metrics["ranker"]["vs_best_baseline"] = {
        "baseline": best, **ev_.paired_difference(per_user["ranker"]["ndcg@10"], per_user[best]["ndcg@10"], n_boot, seed)}
    recall = candidate_recall(test, test_targets, tsnap)
    counts = {"train_groups": len(train.users), "train_rows": train.n_rows, "valid_groups": len(valid.users),
              "test_users": len(test_targets), "test_rows": test.n_rows,
              "best_iteration": int(model.best_iteration_ or model.n_estimators),
              "ranker_params": ranker_params}
    return TrainingResult(split, model, train, valid, test, tsnap, test_targets, per_user, metrics, recall,
                          feature_importance(model), vsnap, valid_targets, np.vstack(reference), current, counts,
                          [{"params": p, "valid_ndcg@10": v} for p, v in ranker_tried])


def metrics_markdown(metrics: dict, names=("ndcg@10", "recall@20", "mrr@20", "hitrate@10")) -> str:
    rows = ["| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for model, m in metrics.items():
        cells = [f"{m[n]:.4f} [{m[n + '_ci'][0]:.3f}, {m[n + '_ci'][1]:.3f}]" for n in names]
        rows.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def save_eval_set(folder, result: TrainingResult) -> None:
    """The test rows (features, groups, items, targets) for parity and gating; drift reference/current rows."""
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t = result.test
    np.save(folder / "test_X.npy", t.X)
    np.save(folder / "test_groups.npy", t.groups)
    np.save(folder / "test_items.npy", t.items)
    np.save(folder / "drift_reference_X.npy", result.reference_X)
    np.save(folder / "drift_current_X.npy", result.current_X)
    payload = {"users": t.users, "item_ids": [str(i) for i in result.test_snapshot.item_ids],
               "pop_order": [int(i) for i in result.test_snapshot.pop_order[:100]],
               "targets": {u: sorted(v) for u, v in result.test_targets.items()}}
    (folder / "test_set.json").write_text(json.dumps(payload))


def ndcg_on_eval_set(folder, scores: np.ndarray) -> float:
    """Mean NDCG@10 over the saved test users for any scorer's scores on test_X (same order)."""
    import json
    from pathlib import Path

    folder = Path(folder)
    groups = np.load(folder / "test_groups.npy")
    items = np.load(folder / "test_items.npy")
    payload = json.loads((folder / "test_set.json").read_text())
    ids = payload["item_ids"]
    offsets = np.concatenate([[0], np.cumsum(groups)])
    by_user = dict(zip(payload["users"], range(len(payload["users"]))))
    vals = []
    for user, rel in payload["targets"].items():
        j = by_user.get(user)
        if j is None:
            vals.append(0.0)
            continue
        sl = slice(offsets[j], offsets[j + 1])
        order = np.lexsort((items[sl], -scores[sl]))
        ranked = [ids[i] for i in items[sl][order][:10]]
        vals.append(ev_.ndcg_at_k(ranked, set(rel), 10))
    return float(np.mean(vals)) if vals else 0.0
