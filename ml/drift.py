"""Data drift between a reference and a current frame, with Evidently's DataDriftPreset (0.7 API).

Each side is sampled to at most `max_rows` rows (seeded) so the cost is bounded. Evidently picks a
method per column: below 1,000 rows p-value tests (K-S for numbers, chi-square / Z-test for
categories; drift when p < threshold, default 0.05); above it distances (normed Wasserstein for
numbers, Jensen-Shannon for categories; drift when distance >= threshold, default 0.1).

Columns Evidently cannot handle are decided here, not passed to it:
- null on both sides: not drifted (method `all_null`);
- null on exactly one side: drifted (method `null_on_one_side`), since the feature vanished/appeared.
Columns with one constant value on both sides go through Evidently (they score 0, no drift).

Column types: numeric (not bool) -> numerical; bool / string / category -> categorical; datetimes are
skipped unless named in `columns` (then compared as epoch seconds).

Evidently imports slowly (~10 s), so it is imported inside `data_drift`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_SHARE_THRESHOLD = 0.5


@dataclass
class DriftResult:
    share_drifted: float
    n_drifted: int
    n_columns: int
    columns: dict[str, dict] = field(default_factory=dict)
    html_path: Path | None = None
    share_threshold: float = DEFAULT_SHARE_THRESHOLD
    n_reference: int = 0
    n_current: int = 0

    @property
    def dataset_drift(self) -> bool:
        """Evidently's dataset-level verdict: drifted share at or above `share_threshold`."""
        return self.n_columns > 0 and self.share_drifted >= self.share_threshold

    @property
    def drifted_columns(self) -> list[str]:
        return [c for c, info in self.columns.items() if info["drifted"]]

    def to_markdown(self) -> str:
        verdict = "DRIFT" if self.dataset_drift else "no dataset drift"
        lines = [
            f"**{verdict}**: {self.n_drifted} of {self.n_columns} columns drifted "
            f"(share {self.share_drifted:.2f}, threshold {self.share_threshold:.2f}); "
            f"reference {self.n_reference:,} rows, current {self.n_current:,} rows (sampled)",
            "",
            "| column | type | drifted | method | score | threshold | natural |",
            "| --- | --- | --- | --- | ---: | ---: | ---: |",
        ]
        order = sorted(self.columns.items(), key=lambda kv: (not kv[1]["drifted"], kv[0]))
        for name, info in order:
            score, thr, nat = info.get("score"), info.get("threshold"), info.get("natural")
            lines.append(
                f"| {name} | {info.get('type', '')} | {'**yes**' if info['drifted'] else 'no'} "
                f"| {info.get('method') or ''} | {'' if score is None else f'{score:.4g}'} "
                f"| {'' if thr is None else f'{thr:.3g}'} | {'' if nat is None else f'{nat:.3g}'} |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"share_drifted": self.share_drifted, "n_drifted": self.n_drifted, "n_columns": self.n_columns,
                "dataset_drift": self.dataset_drift, "share_threshold": self.share_threshold,
                "n_reference": self.n_reference, "n_current": self.n_current, "columns": self.columns,
                "html_path": str(self.html_path) if self.html_path else None}


def _sample(df: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    if max_rows and len(df) > max_rows:
        df = df.sample(n=max_rows, random_state=seed)
    return df.reset_index(drop=True)


def _kind(series: pd.Series) -> str | None:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "categorical"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numerical"
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        return "datetime"
    return "categorical"


def _as_numeric_time(series: pd.Series) -> pd.Series:
    if pd.api.types.is_timedelta64_dtype(series.dtype):
        return series.dt.total_seconds()
    values = series.dt.tz_convert("UTC").dt.tz_localize(None) if getattr(series.dt, "tz", None) else series
    return (values - pd.Timestamp("1970-01-01")).dt.total_seconds()


def _normalise(ref: pd.Series, cur: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    """Plain numpy dtypes Evidently handles: float64 for numbers, object strings for categories."""
    if kind == "numerical":
        return (pd.Series(ref.to_numpy(dtype="float64", na_value=np.nan)),
                pd.Series(cur.to_numpy(dtype="float64", na_value=np.nan)))

    def cat(s: pd.Series) -> pd.Series:
        out = s.astype(object)
        return out.where(out.notna(), None).map(lambda v: v if v is None else str(v))

    return cat(ref), cat(cur)


def _status_str(status: Any) -> str:
    return str(getattr(status, "value", status)).split(".")[-1].upper()


def data_drift(reference: pd.DataFrame, current: pd.DataFrame, *, columns: list[str] | None = None,
               max_rows: int = 5000, seed: int = 0, html_path: str | os.PathLike | None = None,
               share_threshold: float = DEFAULT_SHARE_THRESHOLD, method: str | None = None,
               threshold: float | None = None, column_thresholds: dict[str, float] | None = None) -> DriftResult:
    """Compare `current` with `reference` column by column (Evidently DataDriftPreset).

    `columns`: the columns to compare (default: every column present in both frames, datetimes
    excluded). Each side is sampled to at most `max_rows` rows (reference with `seed`, current with
    `seed + 1`). `html_path`: where to save Evidently's HTML report (parent folders are created).
    `method` / `threshold`: one Evidently stattest (e.g. `wasserstein`) and its threshold for every
    column instead of Evidently's size-dependent choice; `column_thresholds` overrides the threshold
    per column (Evidently's `per_column_threshold`), so the HTML report shows the thresholds applied.
    """
    if columns is None:
        columns = [c for c in reference.columns if c in current.columns
                   and _kind(reference[c]) != "datetime"]
    else:
        missing = [c for c in columns if c not in reference.columns or c not in current.columns]
        if missing:
            raise KeyError(f"data_drift: column(s) {missing} not in both reference and current")
    columns = list(dict.fromkeys(columns))
    ref = _sample(reference[columns], max_rows, seed)
    cur = _sample(current[columns], max_rows, seed + 1)
    if ref.empty or cur.empty:
        raise ValueError(f"data_drift needs rows on both sides (reference {len(ref)}, current {len(cur)})")

    results: dict[str, dict] = {}
    ev_num: list[str] = []
    ev_cat: list[str] = []
    ref_ev: dict[str, pd.Series] = {}
    cur_ev: dict[str, pd.Series] = {}
    for col in columns:
        kind = _kind(ref[col])
        r, c = ref[col], cur[col]
        if kind == "datetime":
            r, c, kind = _as_numeric_time(r), _as_numeric_time(c), "numerical"
        r_null, c_null = bool(r.isna().all()), bool(c.isna().all())
        if r_null or c_null:
            both = r_null and c_null
            results[col] = {"type": kind, "drifted": not both,
                            "method": "all_null" if both else "null_on_one_side",
                            "score": None, "threshold": None, "drift_when": None}
            continue
        r, c = _normalise(r, c, kind)
        ref_ev[col], cur_ev[col] = r, c
        (ev_num if kind == "numerical" else ev_cat).append(col)

    ev_columns = ev_num + ev_cat
    if ev_columns:
        per_column = {c: float(t) for c, t in (column_thresholds or {}).items() if c in ev_columns}
        results.update(_run_evidently(pd.DataFrame(ref_ev)[ev_columns], pd.DataFrame(cur_ev)[ev_columns],
                                      ev_num, ev_cat, share_threshold, html_path,
                                      method=method, threshold=threshold, per_column_threshold=per_column))
    elif html_path is not None:
        Path(html_path).parent.mkdir(parents=True, exist_ok=True)
        Path(html_path).write_text("<html><body><p>No comparable columns (all null).</p></body></html>")

    results = {c: results[c] for c in columns}
    n_drifted = sum(1 for info in results.values() if info["drifted"])
    return DriftResult(
        share_drifted=n_drifted / len(results) if results else 0.0,
        n_drifted=n_drifted,
        n_columns=len(results),
        columns=results,
        html_path=Path(html_path) if html_path is not None else None,
        share_threshold=share_threshold,
        n_reference=len(ref),
        n_current=len(cur),
    )


def _run_evidently(ref: pd.DataFrame, cur: pd.DataFrame, num: list[str], cat: list[str],
                   share_threshold: float, html_path: str | os.PathLike | None, *, method: str | None = None,
                   threshold: float | None = None,
                   per_column_threshold: dict[str, float] | None = None) -> dict[str, dict]:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    report = Report([DataDriftPreset(columns=num + cat, drift_share=share_threshold, method=method,
                                     threshold=threshold, per_column_threshold=per_column_threshold or None)],
                    include_tests=True)
    with warnings.catch_warnings():
        # constant columns make numpy's corrcoef divide by zero inside Evidently's plots
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(current_data=Dataset.from_pandas(cur, data_definition=definition),
                              reference_data=Dataset.from_pandas(ref, data_definition=definition))
        if html_path is not None:
            Path(html_path).parent.mkdir(parents=True, exist_ok=True)
            snapshot.save_html(str(html_path))
    data = snapshot.dict()

    out: dict[str, dict] = {}
    for metric in data.get("metrics", []):
        cfg = metric.get("config") or {}
        if not str(cfg.get("type", "")).endswith("ValueDrift"):
            continue
        method = cfg.get("method")
        threshold = cfg.get("threshold")
        is_p_value = "p_value" in str(method)
        out[cfg["column"]] = {
            "type": "numerical" if cfg["column"] in num else "categorical",
            "drifted": None,
            "method": method,
            "score": None if metric.get("value") is None else float(metric["value"]),
            "threshold": None if threshold is None else float(threshold),
            "drift_when": "score < threshold" if is_p_value else "score >= threshold",
        }
    for test in data.get("tests", []):
        params = (test.get("metric_config") or {}).get("params") or {}
        col = params.get("column")
        if col in out and str(params.get("type", "")).endswith("ValueDrift"):
            out[col]["drifted"] = _status_str(test.get("status")) == "FAIL"
    for info in out.values():  # no test result (should not happen): decide from score and threshold
        if info["drifted"] is None:
            s, t = info["score"], info["threshold"]
            info["drifted"] = bool(s is not None and t is not None
                                   and (s < t if info["drift_when"] == "score < threshold" else s >= t))
    missing = [c for c in num + cat if c not in out]
    if missing:
        raise RuntimeError(f"Evidently returned no ValueDrift result for column(s) {missing}")
    return out
