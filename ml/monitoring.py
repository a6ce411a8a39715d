"""Champion monitoring as pure functions: what the Dagster monitoring assets, the retraining sensor and
`persona replay` all compute, so the three agree.

- **data drift** on the ranker's features: the champion's reference rows vs the same construction for the
  latest window of the current data (`current_feature_rows`). The reference (`champion_reference`) is the
  latest window the champion was trained and validated for — users active in its test window, each row as
  of the window's start (`eval/drift_current_X.npy`) — not its older training windows
  (`eval/drift_reference_X.npy`): on this data the cumulative features (item age and all-time popularity,
  days since a user's first visit, counts) shift between any two windows weeks apart, so unchanged data
  already shows 37-45% of columns "drifted" against the training windows, and a threshold would have to sit
  in that noise. Against the latest validated window, unchanged data scores 0 and only new change counts.
  The comparison with the training windows is still reported (`drift_share_vs_training`).
- **prediction drift**: the champion's ONNX scores on those two row sets (`prediction_drift`);
- **target drift**: the event-type mix and conversion rates (events of a type per view) in the champion's
  training span vs the latest window (`target_drift`);
- **performance**: the champion's NDCG@10 on the latest labelled window, scored like its own test window
  (`window_ndcg`), against the NDCG@10 it had on its test window at training time;
- **the decision** to retrain (`retrain_decision`) and **the promotion gate** on an evaluation window after
  both models' training cutoffs (`gate_versions`).

No Dagster here (architecture boundary 3).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ml import evaluation as ev_
from ml.drift import DriftResult, data_drift
from ml.features import FEATURES
from ml.split import Window, eligible_targets

EVENT_TYPES = ["view", "click", "cart", "remove_from_cart", "checkout", "purchase", "search", "return", "review"]


def latest_window(events: pd.DataFrame, days: float) -> Window:
    """The last `days` of the data, ending the day after the last event (like `ml.split.make_split`)."""
    end = pd.Timestamp(events["ts"].max()).floor("D") + pd.Timedelta(days=1)
    return Window("latest", end - pd.Timedelta(days=days), end)


def features_frame(X: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(X, dtype=np.float64), columns=FEATURES)


def current_feature_rows(events: pd.DataFrame, items: pd.DataFrame, item_ids: list[str], item_matrix: np.ndarray,
                         window: Window, cfg: dict, max_users: int = 300):
    """(snapshot at the window's start, feature rows of users active in the window) — built exactly like the
    reference rows a version saves at training time (`ml.pipeline.activity_sample`)."""
    from ml.pipeline import activity_sample, snapshot_at

    snap = snapshot_at(events, items, item_ids, item_matrix, window.start, cfg)
    return snap, activity_sample(snap, events, window, cfg["candidates"], max_users=max_users)


def champion_reference(version_dir: str | Path, which: str = "latest") -> np.ndarray:
    """Feature rows a version saved at training time: `latest` = its test window (the monitoring reference),
    `training` = its training windows."""
    ev = Path(version_dir) / "eval"
    path = ev / ("drift_current_X.npy" if which == "latest" else "drift_reference_X.npy")
    if which == "latest" and not path.exists():
        path = ev / "drift_reference_X.npy"
    return np.load(path)


def onnx_scores(version_dir: str | Path, X: np.ndarray) -> np.ndarray:
    from ml.onnx_export import OnnxScorer

    if len(X) == 0:
        return np.zeros(0, np.float32)
    return np.asarray(OnnxScorer(Path(version_dir) / "ranker.onnx", providers=["CPUExecutionProvider"])(X))


DRIFT_METHOD = "wasserstein"  # Evidently's normed Wasserstein distance: an effect size, not a p-value


def natural_drift(baseline_X: np.ndarray, reference_X: np.ndarray, *, columns: list[str] | None = None,
                  max_rows: int = 5000, seed: int = 0) -> dict[str, float]:
    """Per feature, the normed Wasserstein distance from the champion's training windows to its reference
    window: how far each feature moves on its own between windows a few weeks apart (item age, all-time
    popularity and days-since-first grow every week), which the champion was validated across."""
    res = data_drift(features_frame(baseline_X), features_frame(reference_X), columns=columns, max_rows=max_rows,
                     seed=seed, method=DRIFT_METHOD, threshold=1.0)
    return {c: float(info["score"] or 0.0) for c, info in res.columns.items()}


def natural_scale(split: dict, current_start) -> float:
    """Elapsed time from the champion's validated (test) window to the current window, as a fraction of the mean
    distance from its training windows to that test window: the share of the natural movement that time alone
    explains now (0 when the current window is the validated one). `split` is a version manifest's split."""
    test_start = pd.Timestamp(split["test"]["start"])
    offsets = [(test_start - pd.Timestamp(w["start"])) / pd.Timedelta(days=1) for w in split["train"]]
    mean_offset = float(np.mean(offsets)) if offsets else 0.0
    elapsed = max((pd.Timestamp(current_start) - test_start) / pd.Timedelta(days=1), 0.0)
    return elapsed / mean_offset if mean_offset > 0 else 0.0


def column_threshold_for(natural: float, scale: float, column_threshold: float = 0.1,
                         natural_factor: float = 2.0) -> float:
    """The distance at which one feature counts as drifted: `max(column_threshold, natural_factor x scale x
    natural)`, where a natural movement below `column_threshold` counts as none. Below that distance two samples
    of the same weeks differ by sampling noise alone (5,000 rows: a few hundredths), and noise does not grow with
    the champion's age, so it earns no allowance: features that do not move on their own (prices, affinities)
    stay at `column_threshold` however old the champion is."""
    if natural is None or not np.isfinite(natural) or natural < column_threshold:
        return float(column_threshold)
    return float(max(column_threshold, natural_factor * scale * natural))


def feature_drift(reference_X: np.ndarray, current_X: np.ndarray, *, baseline_X: np.ndarray | None = None,
                  natural_scale: float = 1.0, max_rows: int = 5000, share_threshold: float = 0.5,
                  column_threshold: float = 0.1, natural_factor: float = 2.0, html_path=None,
                  seed: int = 0) -> DriftResult:
    """Per-feature drift, reference -> current, as Evidently's normed Wasserstein distance for every column.

    A column drifts when its distance reaches `column_threshold` and, given `baseline_X` (the champion's
    training-window rows), also `natural_factor` x `natural_scale` x the column's natural movement
    (`natural_drift`; `natural_scale` from `natural_scale()`: how much of it the elapsed time explains); a
    natural movement below `column_threshold` is sampling noise and earns no allowance (`column_threshold_for`).
    Why: on real shop data a third of the columns move past any fixed distance from one week to the next
    because they count time; only movement well beyond what time alone explains is new.
    The per-column thresholds go to Evidently, so its HTML report shows them; `natural` is kept per column.
    Features holding one and the same value on both sides (reviews on a shop without reviews) are left out of
    the comparison and the share: they cannot drift, and counting them would dilute the share as features
    are added.
    """
    ref, cur = features_frame(reference_X), features_frame(current_X)
    columns = [c for c in ref.columns if pd.concat([ref[c], cur[c]], ignore_index=True).nunique(dropna=False) > 1]
    if not columns:
        return DriftResult(0.0, 0, 0, share_threshold=share_threshold, n_reference=len(ref), n_current=len(cur))
    natural = (natural_drift(baseline_X, reference_X, columns=columns, max_rows=max_rows, seed=seed)
               if baseline_X is not None and len(baseline_X) else None)
    per_column = ({c: column_threshold_for(n, natural_scale, column_threshold, natural_factor)
                   for c, n in natural.items()} if natural is not None else None)
    res = data_drift(ref, cur, columns=columns, max_rows=max_rows, seed=seed, share_threshold=share_threshold,
                     html_path=html_path, method=DRIFT_METHOD, threshold=column_threshold,
                     column_thresholds=per_column)
    if natural is not None:
        for c, info in res.columns.items():
            info["natural"] = natural.get(c)
    return res


def prediction_drift(reference_scores: np.ndarray, current_scores: np.ndarray, *, max_rows: int = 5000,
                     html_path=None, seed: int = 0) -> tuple[DriftResult, dict]:
    """Evidently drift of the score distribution (one numeric column) + summary statistics of both sides."""
    ref = pd.DataFrame({"score": np.asarray(reference_scores, np.float64)})
    cur = pd.DataFrame({"score": np.asarray(current_scores, np.float64)})
    res = data_drift(ref, cur, max_rows=max_rows, seed=seed, html_path=html_path, share_threshold=0.5)

    def stats(s: np.ndarray) -> dict:
        s = np.asarray(s, np.float64)
        if not len(s):
            return {"n": 0}
        q = np.quantile(s, [0.1, 0.5, 0.9])
        return {"n": int(len(s)), "mean": float(s.mean()), "std": float(s.std()),
                "p10": float(q[0]), "p50": float(q[1]), "p90": float(q[2])}

    return res, {"reference": stats(reference_scores), "current": stats(current_scores)}


def conversion_rates(events: pd.DataFrame) -> pd.DataFrame:
    """Per event type: count, share of all events, and rate per view (e.g. carts per view)."""
    counts = events["event_type"].value_counts()
    views = max(int(counts.get("view", 0)), 1)
    total = max(int(counts.sum()), 1)
    rows = [{"event_type": t, "n": int(counts.get(t, 0)), "share": counts.get(t, 0) / total,
             "per_view": counts.get(t, 0) / views} for t in EVENT_TYPES if t in counts.index]
    return pd.DataFrame(rows, columns=["event_type", "n", "share", "per_view"])


def target_drift(reference_events: pd.DataFrame, current_events: pd.DataFrame, *, max_rows: int = 5000,
                 html_path=None, seed: int = 0) -> tuple[DriftResult, pd.DataFrame]:
    """Drift of the event-type mix (categorical, Evidently) and the per-type conversion rates side by side."""
    ref = pd.DataFrame({"event_type": reference_events["event_type"].astype(str).to_numpy()})
    cur = pd.DataFrame({"event_type": current_events["event_type"].astype(str).to_numpy()})
    res = data_drift(ref, cur, max_rows=max_rows, seed=seed, html_path=html_path, share_threshold=0.5)
    r, c = conversion_rates(reference_events), conversion_rates(current_events)
    table = r.merge(c, on="event_type", how="outer", suffixes=("_reference", "_current")).fillna(0.0)
    table["per_view_change"] = table["per_view_current"] - table["per_view_reference"]
    return res, table


def window_ndcg(snap, events: pd.DataFrame, window: Window, version_dir: str | Path, cfg: dict) -> tuple[float, int]:
    """The version's mean NDCG@10 over users with a target in `window` and history before it, candidates and
    features from `snap` (as of the window's start) — the protocol of its own test window."""
    from ml.ranker import build_ranking_data, rank_lists

    targets = eligible_targets(events, window, list(cfg["targets"]))
    if not targets:
        return float("nan"), 0
    data = build_ranking_data(snap, targets, cfg["candidates"])
    scores = onnx_scores(version_dir, data.X)
    lists = {u: [str(snap.item_ids[i]) for i in l] for u, l in rank_lists(data, scores, snap).items()}
    per_user = ev_.per_user_metrics(lists, targets)
    return float(np.mean(per_user["ndcg@10"])), len(targets)


@dataclass
class Decision:
    retrain: bool
    reasons: list[str] = field(default_factory=list)
    drift_share: float | None = None
    ndcg_now: float | None = None
    ndcg_champion: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def retrain_decision(drift_share: float | None, ndcg_now: float | None, ndcg_champion: float | None, *,
                     share_threshold: float, ndcg_drop: float) -> Decision:
    """Retrain when the drifted-column share reaches `share_threshold`, or when the latest labelled window's
    NDCG@10 is below the champion's (at training time) by at least `ndcg_drop`."""
    reasons = []
    if drift_share is not None and drift_share >= share_threshold:
        reasons.append(f"drift share {drift_share:.2f} >= {share_threshold:.2f}")
    if (ndcg_now is not None and ndcg_champion is not None and not np.isnan(ndcg_now)
            and ndcg_champion - ndcg_now >= ndcg_drop):
        reasons.append(f"NDCG@10 {ndcg_now:.4f} fell by {ndcg_champion - ndcg_now:.4f} (>= {ndcg_drop}) "
                       f"from the champion's {ndcg_champion:.4f}")
    return Decision(bool(reasons), reasons, drift_share, ndcg_now, ndcg_champion)


@dataclass
class GateResult:
    promote: bool
    reason: str
    challenger_ndcg: float
    champion_ndcg: float | None
    champion: str | None


def gate_versions(challenger_dir: str | Path, champion_dir: str | Path | None, tolerance: float,
                  features: list[str] = FEATURES) -> GateResult:
    """Score challenger and champion ONNX on the challenger's test rows (its test window starts at its own
    training cutoff, which is after the older champion's) and apply `ml.registry.gate`."""
    from ml import registry
    from ml.pipeline import ndcg_on_eval_set

    challenger_dir = Path(challenger_dir)
    X = np.load(challenger_dir / "eval" / "test_X.npy")
    challenger = ndcg_on_eval_set(challenger_dir / "eval", onnx_scores(challenger_dir, X))
    champion = None
    name = None
    if champion_dir is not None and Path(champion_dir).name != challenger_dir.name:
        champion_dir = Path(champion_dir)
        name = champion_dir.name
        if json.loads((champion_dir / "features.json").read_text()) == list(features):
            champion = ndcg_on_eval_set(challenger_dir / "eval", onnx_scores(champion_dir, X))
        else:  # another feature list: the stored test metric is the only comparable number
            champion = json.loads((champion_dir / "metrics.json").read_text())["ranker"]["ndcg@10"]
    ok, reason = registry.gate({"ndcg@10": challenger}, None if champion is None else {"ndcg@10": champion},
                               tolerance=tolerance)
    keys = [registry.pseudonym_key(d) for d in (challenger_dir, champion_dir)] if name is not None else [None, None]
    if not ok and None not in keys and keys[0] != keys[1]:
        # the champion's snapshot holds ids hashed with another key: serving it would treat every user as unknown
        ok, reason = True, (f"the champion {name} was made under another pseudonymization key; it cannot serve "
                            f"this warehouse's users (gate would have refused: {reason})")
    return GateResult(ok, reason, challenger, champion, name)
