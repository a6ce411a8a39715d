"""Learning to rank: LightGBM lambdarank over (user, candidate) feature rows, one group per user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from ml.candidates import SOURCES, generate
from ml.features import FEATURES, build_features
from ml.snapshot import Snapshot

Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass
class RankingData:
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray         # rows per user, in order
    users: list[str]
    items: np.ndarray          # item index per row
    sources: np.ndarray        # bool (rows, len(SOURCES))

    @property
    def n_rows(self) -> int:
        return len(self.y)


def build_ranking_data(snap: Snapshot, targets: dict[str, set[str]], per_source: dict[str, int],
                       require_positive: bool = False) -> RankingData:
    """Candidates + features for each user in `targets` known to the snapshot; label 1 = a target item."""
    Xs, ys, groups, users, items, sources = [], [], [], [], [], []
    for user in sorted(targets):
        u = snap.user_index.get(user)
        if u is None:
            continue
        cand = generate(snap, u, per_source)
        rel = {snap.item_index[i] for i in targets[user] if i in snap.item_index}
        y = np.fromiter((int(i) in rel for i in cand.items), dtype=np.float32, count=len(cand.items))
        if require_positive and (y.sum() == 0 or y.sum() == len(y)):
            continue
        Xs.append(build_features(snap, u, cand))
        ys.append(y)
        groups.append(len(y))
        users.append(user)
        items.append(cand.items)
        sources.append(cand.sources)
    if not Xs:
        empty = np.zeros((0, len(FEATURES)), dtype=np.float32)
        return RankingData(empty, np.zeros(0, np.float32), np.zeros(0, np.int64), [], np.zeros(0, np.int32),
                           np.zeros((0, len(SOURCES)), bool))
    return RankingData(np.vstack(Xs), np.concatenate(ys), np.asarray(groups, dtype=np.int64), users,
                       np.concatenate(items), np.vstack(sources))


def concat(parts: list[RankingData]) -> RankingData:
    parts = [p for p in parts if p.n_rows]
    return RankingData(np.vstack([p.X for p in parts]), np.concatenate([p.y for p in parts]),
                       np.concatenate([p.groups for p in parts]), sum((p.users for p in parts), []),
                       np.concatenate([p.items for p in parts]), np.vstack([p.sources for p in parts]))


TUNABLE = ("learning_rate", "num_leaves", "min_child_samples", "reg_lambda", "colsample_bytree")


def train_ranker(train: RankingData, valid: RankingData, cfg: dict, log: Callable[[str], None] = print):
    """LightGBM lambdarank with early stopping on validation NDCG@10. Returns the fitted LGBMRanker."""
    import lightgbm as lgb

    if train.n_rows == 0 or valid.n_rows == 0:
        raise ValueError(f"not enough ranking groups to train (train rows {train.n_rows}, valid rows "
                         f"{valid.n_rows}): the data needs users with targets and history in both windows")
    rcfg = cfg["ranker"]
    model = lgb.LGBMRanker(
        objective="lambdarank", n_estimators=int(rcfg["n_estimators"]), learning_rate=float(rcfg["learning_rate"]),
        num_leaves=int(rcfg["num_leaves"]), min_child_samples=int(rcfg["min_child_samples"]),
        reg_lambda=float(rcfg.get("reg_lambda", 0.0)), colsample_bytree=float(rcfg.get("colsample_bytree", 0.8)),
        random_state=int(rcfg["seed"]), deterministic=True, force_row_wise=True, n_jobs=2, verbose=-1,
        lambdarank_truncation_level=20, subsample=0.8, subsample_freq=1,
    )
    model.fit(
        pd.DataFrame(train.X, columns=FEATURES), train.y, group=train.groups,
        eval_X=(pd.DataFrame(valid.X, columns=FEATURES),), eval_y=(valid.y,), eval_group=[valid.groups],
        eval_at=[10], callbacks=[lgb.early_stopping(int(rcfg["early_stopping_rounds"]), verbose=False),
                                 lgb.log_evaluation(0)],
    )
    log(f"ranker: best iteration {model.best_iteration_} of {rcfg['n_estimators']}, "
        f"valid ndcg@10 {model.best_score_['valid_0']['ndcg@10']:.4f}")
    return model


def tune_ranker(train: RankingData, valid: RankingData, cfg: dict, log: Callable[[str], None] = print,
                fit: Callable | None = None):
    """Fit one ranker per `ranker.grid` entry (overrides of TUNABLE keys) and keep the best on validation.

    Selection uses the validation window only (its NDCG@10 at the early-stopping iteration); the
    test window is never looked at. `fit` defaults to train_ranker. Returns (model, chosen overrides,
    [(params, valid ndcg@10)]).
    """
    grid = cfg["ranker"].get("grid") or [{}]
    bad = [k for g in grid for k in g if k not in TUNABLE]
    if bad:
        raise ValueError(f"ranker.grid: keys {sorted(set(bad))} are not tunable; use {list(TUNABLE)}")
    tried, best = [], None
    for params in grid:
        model = (fit or train_ranker)(train, valid, dict(cfg, ranker=dict(cfg["ranker"], **params)), lambda m: None)
        score = float(model.best_score_["valid_0"]["ndcg@10"])
        tried.append((params, score))
        if best is None or score > best[2]:
            best = (model, params, score)
    model, params, score = best
    log(f"ranker: {len(grid)} configs on validation; best {params or 'defaults'} valid ndcg@10 {score:.4f}, "
        f"best iteration {model.best_iteration_}")
    return model, params, tried


def booster_scorer(model) -> Scorer:
    booster = model.booster_ if hasattr(model, "booster_") else model
    return lambda X: booster.predict(X, num_iteration=booster.best_iteration or None)


def rank_lists(data: RankingData, scores: np.ndarray, snap: Snapshot, k: int = 20) -> dict[str, list[int]]:
    """Top-k item indices per user by score (ties broken by item index), padded with popular items."""
    from ml.evaluation import _pad

    out = {}
    start = 0
    for user, g in zip(data.users, data.groups):
        sl = slice(start, start + g)
        items, s = data.items[sl], scores[sl]
        order = np.lexsort((items, -s))
        out[user] = _pad([int(i) for i in items[order][:k]], snap.pop_order, k)
        start += g
    return out


def feature_importance(model) -> pd.DataFrame:
    booster = model.booster_
    return (pd.DataFrame({"feature": FEATURES,
                          "gain": booster.feature_importance("gain"),
                          "splits": booster.feature_importance("split")})
            .sort_values("gain", ascending=False).reset_index(drop=True))


def candidate_recall(data: RankingData, targets: dict[str, set[str]], snap: Snapshot) -> dict[str, float]:
    """Share of target items that each source (and the union) puts into the candidate set."""
    total = sum(len(targets[u]) for u in targets)
    hits = {s: 0 for s in SOURCES}
    hits["union"] = 0
    by_user = dict(zip(data.users, range(len(data.users))))
    offsets = np.concatenate([[0], np.cumsum(data.groups)])
    for user, rel in targets.items():
        j = by_user.get(user)
        if j is None:
            continue
        sl = slice(offsets[j], offsets[j + 1])
        items = data.items[sl]
        src = data.sources[sl]
        rel_idx = {snap.item_index[i] for i in rel if i in snap.item_index}
        mask = np.fromiter((int(i) in rel_idx for i in items), dtype=bool, count=len(items))
        hits["union"] += int(mask.sum())
        for s_i, s in enumerate(SOURCES):
            hits[s] += int((mask & src[:, s_i]).sum())
    return {k: (v / total if total else 0.0) for k, v in hits.items()}
