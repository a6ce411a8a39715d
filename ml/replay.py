"""Replay a shop's history step by step: ingest -> monitor -> retrain when triggered -> gate -> promote.

For each step (a week on the GA merchandise store, a month on UCI retail) the events are cut at the step's end,
as if that were "now":

1. **monitor** the champion on the step's window (the events that arrived since the previous step):
   feature drift against the champion's training reference, prediction drift, target drift, and its NDCG@10 on
   that labelled window (`ml.monitoring`, the same functions the Dagster monitors call);
2. **trigger** with `ml.monitoring.retrain_decision` (drift share >= `drift.share_threshold`, or NDCG@10 drop
   >= `drift.ndcg_drop`) — the same rule as the `drift_retrain_sensor`;
3. **retrain** with `ml.pipeline.train_and_evaluate` on the cut events (its split counts back from the cut, so
   its test window is the step's window, after the champion's training cutoff);
4. **gate** with `ml.monitoring.gate_versions` (both ONNX models scored on the challenger's test rows) and
   **promote** atomically in a replay-only registry (`<out>/replay_models/`, never the production one).

Everything runs in-process (no Dagster run per step) so a whole replay stays within minutes on 2 cores. The
replay reads the source through its adapter (the canonical raw events, as `raw_events`), not through dbt; the
versions it writes hold ONNX, features, metrics, manifest and the test rows, but no serving snapshot.
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ml import monitoring as mon
from ml import registry
from ml.features import FEATURES
from ml.split import Window

EVENT_COLUMNS = ["user_id", "session_id", "ts", "event_type", "item_id", "price"]
ITEM_COLUMNS = ["item_id", "title", "category_path", "brand", "price"]
GA_DEFAULT = Path("data/ga_merch_store/product_events_2016-08_2016-10.parquet")
UCI_FILE = Path("uci_online_retail/online_retail.csv.gz")  # under the shared datasets folder beside the repo


class ReplayUnavailable(RuntimeError):
    """The source cannot be replayed here (adapter or data absent); the message says why."""


@dataclass
class ReplaySource:
    name: str          # short name: ga, uci, or an adapter name
    adapter: str
    path: Path


def resolve_source(settings, source: str, path: str | None = None) -> ReplaySource:
    """`ga` (embedded GA merchandise store), `uci` (UCI online retail, when its adapter exists) or an adapter name."""
    from data_contracts.adapters import ADAPTERS

    if source == "ga":
        from data_contracts.adapters import ga_merch

        default = settings.source_path if settings["source"]["adapter"] == ga_merch.NAME else settings.path(GA_DEFAULT)
        return ReplaySource("ga", ga_merch.NAME, Path(path) if path else default)
    if source == "uci":
        try:
            mod = importlib.import_module("data_contracts.adapters.uci_retail")
        except ModuleNotFoundError:
            raise ReplayUnavailable("UCI retail cannot be replayed yet: its adapter "
                                    "(data_contracts/adapters/uci_retail.py) is not in this checkout") from None
        name = getattr(mod, "NAME", "uci_retail")
        p = Path(path) if path else settings.root.parent / "shared" / "datasets" / UCI_FILE
        if not p.exists():
            raise ReplayUnavailable(f"UCI retail data not found ({p}); pass --path to the file")
        return ReplaySource("uci", name, p)
    if source in ADAPTERS:
        if not path:
            raise ReplayUnavailable(f"--path is required for adapter {source!r}")
        return ReplaySource(source, source, Path(path))
    raise ReplayUnavailable(f"unknown source {source!r}: use ga, uci or one of {sorted(ADAPTERS)}")


def _adapter(name: str):
    from data_contracts.adapters import ADAPTERS

    if name in ADAPTERS:
        return ADAPTERS[name]
    mod = importlib.import_module("data_contracts.adapters.uci_retail")
    return mod.load


def load_events_items(src: ReplaySource, earliest_ts: str = "2000-01-01") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical events (with an item, in time order) and items, straight from the adapter."""
    if not src.path.exists():
        raise ReplayUnavailable(f"{src.path} not found")
    res = _adapter(src.adapter)(src.path, earliest_ts=earliest_ts)
    ev = res.events.to_pandas()
    ev = ev.loc[ev["item_id"].notna(), EVENT_COLUMNS].copy()
    ev["ts"] = pd.to_datetime(ev["ts"])
    ev = ev.sort_values("ts", kind="stable").reset_index(drop=True)
    items = res.items.to_pandas()
    for c in ITEM_COLUMNS:
        if c not in items.columns:
            items[c] = None
    return ev, items[ITEM_COLUMNS].sort_values("item_id").reset_index(drop=True)


def item_embeddings(items: pd.DataFrame, cfg: dict, cache_path: Path) -> tuple[list[str], np.ndarray]:
    """Item vectors from the configured encoder, cached by content hash in a Parquet file next to the replay."""
    from ml.embeddings import TextEncoder, embed_items

    cache = pd.read_parquet(cache_path) if cache_path.exists() else None
    e = cfg["encoder"]
    encoder = TextEncoder(e["model"], e.get("device", "auto"), e.get("batch_size", 64), e.get("max_length", 64))
    table, _ = embed_items(items, encoder, cache)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(cache_path, index=False)
    table = table.sort_values("item_id")
    return table["item_id"].astype(str).tolist(), np.vstack(table["embedding"].map(lambda v: np.asarray(v, np.float32)))


def step_ends(events: pd.DataFrame, step_days: float, span_days: float, min_history_days: float,
              max_steps: int | None = None) -> list[pd.Timestamp]:
    """Step ends counted back from the day after the last event, keeping only cuts with enough data before them
    for the replay split (train windows + valid + test) plus `min_history_days` of history."""
    end = pd.Timestamp(events["ts"].max()).floor("D") + pd.Timedelta(days=1)
    first_ok = pd.Timestamp(events["ts"].min()) + pd.Timedelta(days=span_days + min_history_days)
    ends = []
    e = end
    while e >= first_ok:
        ends.append(e)
        e = e - pd.Timedelta(days=step_days)
    ends = sorted(ends)
    return ends[-max_steps:] if max_steps else ends


def replay_config(settings, step_days: float | None = None) -> dict:
    """The run's configuration with the replay's split: `replay.split` (weekly windows for weekly steps), its
    window lengths scaled to `step_days` when given (monthly steps get monthly windows, so the champion's test
    window, its drift reference, covers the same span as the step window it is compared with)."""
    import copy

    cfg = copy.deepcopy(settings.data)
    split = dict(cfg["split"], **settings["replay"]["split"])
    if step_days and float(step_days) != float(split["test_days"]):
        factor = float(step_days) / float(split["test_days"])
        split.update({k: float(split[k]) * factor for k in ("test_days", "valid_days", "train_days")})
    cfg["split"] = split
    return cfg


def _fingerprint(ev: pd.DataFrame) -> str:
    return registry.data_hash(str(len(ev)), str(ev["ts"].max()),
                              str(int(pd.util.hash_pandas_object(ev[["ts", "item_id"]], index=False).sum())))


def train_version(models_dir: Path, events: pd.DataFrame, items, item_ids, matrix, cfg: dict, extra: dict,
                  log: Callable[[str], None] = print) -> Path:
    """`train_and_evaluate` on `events`, written as a registry version (ONNX, booster, features, metrics,
    manifest with split / training cutoff / data hash / code version, test rows for gating)."""
    from ml.onnx_export import export_ranker
    from ml.pipeline import save_eval_set, train_and_evaluate

    result = train_and_evaluate(events, items, item_ids, matrix, cfg, log=log)
    metrics = dict(result.metrics, candidate_recall=result.candidate_recall, counts=result.counts)

    def write(folder: Path) -> None:
        export_ranker(result.model, len(FEATURES), folder / "ranker.onnx", int(cfg["onnx"]["target_opset"]))
        result.model.booster_.save_model(str(folder / "ranker.txt"))
        save_eval_set(folder / "eval", result)

    manifest = {"split": result.split.as_dict(), "training_cutoff": str(result.split.training_cutoff),
                "data_hash": _fingerprint(events), "code_version": registry.code_version(),
                "targets": cfg["targets"], "n_features": len(FEATURES), "encoder": cfg["encoder"]["model"],
                "serving_as_of": str(result.split.end), "counts": result.counts, **extra}
    return registry.create_version(models_dir, write, manifest, metrics, FEATURES)


def run_replay(settings, source: str = "ga", path: str | None = None, out_dir: str | Path | None = None,
               max_steps: int | None = None, step_days: float | None = None,
               log: Callable[[str], None] = print) -> dict:
    """Walk the source step by step; write `<out>/replay.json` (GA) or `replay_<source>.json` and a plot."""
    t_all = time.time()
    src = resolve_source(settings, source, path)
    rp = settings["replay"]
    step = float(step_days or rp["step_days"].get(src.name, rp["step_days"].get("ga", 7)))
    cfg = replay_config(settings, step)
    out = Path(out_dir) if out_dir else settings.path(rp["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    stem = "replay" if src.name == "ga" else f"replay_{src.name}"
    models_dir = out / f"{stem}_models"
    if models_dir.exists():
        import shutil
        shutil.rmtree(models_dir)
    knobs = {"share_threshold": float(cfg["drift"]["share_threshold"]), "ndcg_drop": float(cfg["drift"]["ndcg_drop"]),
             "tolerance": float(cfg["registry"]["promotion_tolerance"]), "max_rows": int(cfg["drift"]["max_rows"]),
             "max_users": int(cfg["drift"].get("max_users", 300)),
             "column_threshold": float(cfg["drift"]["column_threshold"]),
             "natural_factor": float(cfg["drift"]["natural_factor"])}

    log(f"replay {src.name}: loading {src.path} with {src.adapter}")
    events, items = load_events_items(src, str(cfg["quality"]["earliest_ts"]))
    item_ids, matrix = item_embeddings(items, cfg, out / f"{stem}_embeddings.parquet")
    s = cfg["split"]
    span = s["train_days"] * int(s["train_windows"]) + s["valid_days"] + s["test_days"]
    ends = step_ends(events, step, span, float(rp["min_history_days"]), max_steps)
    if not ends:
        raise ReplayUnavailable(f"{src.name}: data span too short for the replay split ({span} days + history)")
    log(f"{len(events):,} events, {len(items):,} items; {len(ends)} steps of {step:g} days, "
        f"{ends[0]:%Y-%m-%d} .. {ends[-1]:%Y-%m-%d}")

    try:
        shown_path = str(src.path.resolve().relative_to(settings.root.resolve()))
    except ValueError:
        shown_path = str(src.path)
    json_path = out / f"{stem}.json"

    def _write_payload(records: list[dict], complete: bool) -> dict:
        payload = {"source": src.name, "adapter": src.adapter, "path": shown_path, "step_days": step,
                   "split": cfg["split"], "thresholds": knobs, "code_version": registry.code_version(),
                   "registry_consistent": not registry.verify(models_dir), "complete": complete,
                   "steps_planned": len(ends), "seconds": round(time.time() - t_all, 1), "steps": records}
        tmp = json_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=_json_default))
        tmp.replace(json_path)
        return payload

    records = []
    for k, end in enumerate(ends):
        t0 = time.time()
        cut = events[events["ts"] < end]
        window = Window(f"step{k}", end - pd.Timedelta(days=step), end)
        champion = registry.champion_version(models_dir)
        rec = {"step": k, "cut": str(end.date()), "window_start": str(window.start.date()),
               "window_end": str(window.end.date()), "events": int(len(cut)),
               "window_events": int(((cut["ts"] >= window.start)).sum()), "champion_before": champion}
        if champion is None:
            decision = mon.Decision(True, ["bootstrap: no champion yet"])
            rec.update(drift_share=None, n_drifted=None, drifted_columns=[], n_columns=None, drift_share_plain=None,
                       natural_scale=None, prediction_drift=None,
                       target_drift=None, **{"ndcg@10": None, "champion_ndcg@10": None, "window_users": None})
        else:
            cdir = models_dir / "versions" / champion
            cmetrics = json.loads((cdir / "metrics.json").read_text())
            snap, cur_X = mon.current_feature_rows(cut, items, item_ids, matrix, window, cfg, knobs["max_users"])
            ref_X = mon.champion_reference(cdir, "latest")
            split = json.loads((cdir / "manifest.json").read_text())["split"]
            scale = mon.natural_scale(split, window.start)
            fd = mon.feature_drift(ref_X, cur_X, baseline_X=mon.champion_reference(cdir, "training"),
                                   natural_scale=scale,
                                   max_rows=knobs["max_rows"], share_threshold=knobs["share_threshold"],
                                   column_threshold=knobs["column_threshold"], natural_factor=knobs["natural_factor"])
            pdrift, _ = mon.prediction_drift(mon.onnx_scores(cdir, ref_X), mon.onnx_scores(cdir, cur_X),
                                             max_rows=knobs["max_rows"])
            ref_ev = cut[(cut["ts"] >= pd.Timestamp(split["train"][0]["start"]))
                         & (cut["ts"] < pd.Timestamp(split["test"]["start"]))]
            tdrift, _ = mon.target_drift(ref_ev, cut[cut["ts"] >= window.start], max_rows=knobs["max_rows"])
            ndcg_now, n_users = mon.window_ndcg(snap, cut, window, cdir, cfg)
            ndcg_ch = float(cmetrics["ranker"]["ndcg@10"])
            decision = mon.retrain_decision(fd.share_drifted, ndcg_now, ndcg_ch, share_threshold=knobs["share_threshold"],
                                            ndcg_drop=knobs["ndcg_drop"])
            # the same distances against the fixed column threshold alone (the statistic without the natural
            # movement allowance), kept to show what the allowance filters out
            plain = [c for c, info in fd.columns.items()
                     if info.get("score") is not None and info["score"] >= knobs["column_threshold"]]
            rec.update(drift_share=fd.share_drifted, n_drifted=fd.n_drifted, drifted_columns=fd.drifted_columns,
                       n_columns=fd.n_columns, drift_share_plain=len(plain) / fd.n_columns if fd.n_columns else 0.0,
                       natural_scale=scale,
                       prediction_drift=pdrift.columns["score"]["score"],
                       target_drift=tdrift.columns["event_type"]["score"],
                       **{"ndcg@10": ndcg_now, "champion_ndcg@10": ndcg_ch, "window_users": n_users})
        rec.update(trigger=decision.reasons, retrained=False, promoted=False, challenger=None,
                   **{"challenger_ndcg@10": None, "gate_champion_ndcg@10": None}, gate=None)
        if decision.retrain:
            vdir = train_version(models_dir, cut, items, item_ids, matrix, cfg,
                                 {"replay_step": k, "replay_source": src.name}, log=lambda m: None)
            current = registry.champion_version(models_dir)
            g = mon.gate_versions(vdir, None if current is None else models_dir / "versions" / current,
                                  knobs["tolerance"])
            if g.promote:
                registry.promote(models_dir, vdir.name, reason=g.reason,
                                 details={"replay_step": k, "trigger": decision.reasons})
            rec.update(retrained=True, promoted=g.promote, challenger=vdir.name, gate=g.reason,
                       **{"challenger_ndcg@10": g.challenger_ndcg, "gate_champion_ndcg@10": g.champion_ndcg})
            if champion is None:
                rec["ndcg@10"] = g.challenger_ndcg
        rec["champion_after"] = registry.champion_version(models_dir)
        rec["seconds"] = round(time.time() - t0, 1)
        ds = rec["drift_share"]
        nd = rec["ndcg@10"]
        log(f"step {k} cut {rec['cut']}: drift {'-' if ds is None else f'{ds:.2f}'}, "
            f"ndcg@10 {'-' if nd is None or np.isnan(nd) else f'{nd:.4f}'}, retrained {rec['retrained']}, "
            f"promoted {rec['promoted']} ({rec['seconds']}s) {'; '.join(decision.reasons)}")
        records.append(rec)
        _write_payload(records, complete=False)  # an interrupted replay keeps the steps it finished

    payload = _write_payload(records, complete=True)
    png = plot_replay(payload, out / f"{stem}.png")
    log(f"wrote {json_path} and {png} in {payload['seconds']}s")
    return payload


def _json_default(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    return str(v)


def plot_replay(payload: dict, path: Path) -> Path:
    """Drift share (top) and NDCG@10 (bottom) per step, with retrain (triangle) and promote (star) markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = payload["steps"]
    x = np.arange(len(steps))
    labels = [s["cut"] for s in steps]

    def series(key):
        return np.array([np.nan if s.get(key) is None else float(s[key]) for s in steps])

    drift, ndcg, chal = series("drift_share"), series("ndcg@10"), series("challenger_ndcg@10")
    plain = series("drift_share_plain")
    retrained = np.array([s["retrained"] for s in steps])
    promoted = np.array([s["promoted"] for s in steps])
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    a1.plot(x, drift, "o-", color="tab:blue",
            label="drift share: features drifted beyond their natural movement (champion vs step window)")
    if not np.all(np.isnan(plain)):
        a1.plot(x, plain, "o:", color="tab:gray", alpha=0.7, label="plain share (distance >= column threshold only)")
    a1.axhline(payload["thresholds"]["share_threshold"], color="tab:red", ls="--", lw=1, label="retrain threshold")
    a1.set_ylabel("drift share")
    a1.set_ylim(0, 1)
    a2.plot(x, ndcg, "o-", color="tab:green", label="champion NDCG@10 on the step window")
    floor = series("champion_ndcg@10") - float(payload["thresholds"].get("ndcg_drop", np.nan))
    if not np.all(np.isnan(floor)):
        a2.step(x, floor, "--", where="mid", color="tab:red", lw=1,
                label="retrain below: champion's own NDCG@10 - ndcg_drop")
    a2.plot(x[retrained], chal[retrained], "^", color="tab:orange", ms=10, label="retrained: challenger NDCG@10")
    a2.plot(x[promoted], chal[promoted], "*", color="black", ms=14, label="promoted")
    refused = retrained & ~promoted
    a2.plot(x[refused], chal[refused], "x", color="tab:red", ms=10, mew=2, label="refused by the gate")
    for ax in (a1, a2):
        for i in np.flatnonzero(retrained):
            ax.axvline(i, color="tab:orange", alpha=0.25, lw=6)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    a2.set_ylabel("NDCG@10")
    a2.set_xticks(x, labels, rotation=30, ha="right")
    a2.set_xlabel("step (events cut at this date)")
    fig.suptitle(f"Replay of {payload['source']} every {payload['step_days']:g} days: drift, quality, retraining")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
