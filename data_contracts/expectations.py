"""Great Expectations suites for the canonical raw tables and the dbt marts, built in code.

Raw suites (from `schema.py`):
- `raw_events`: every EVENTS_SCHEMA column exists; the lineage/key columns are non-null; event_id is
  unique; event_type is one of EVENT_TYPES; item_id is present on every non-search event; price >= 0
  and rating in [1, 5] when present; quantity > 0 on unit-moving events when present; ts lies between
  `earliest_ts` and now + `max_future_skew_hours`.
- `raw_items`: every ITEMS_SCHEMA column exists; item_id non-null and unique; price >= 0 when present.

Mart suites (`fct_events`, `fct_sessions`, `fct_user_item_interactions`, `dim_users`, `dim_items`,
`fct_item_covisitation`): each expectation carries a GE severity. `critical` ones guard what the ML steps
rely on (keys non-null and unique, counts >= 1, rates in [0, 1], a minimum row count): a failure would
corrupt what follows, so the Dagster check running them is blocking. `warning` ones are plausibility
bounds from `quality.marts` (session length, events per session, share of anonymous events, price
ceiling): a failure is worth a look, not a stop, so their check has WARN severity. `validate(...,
severity=...)` runs one of the two halves.

The time window is a suite *parameter* (`{"$PARAMETER": "earliest_ts"}` / `"latest_ts"`), filled in
at validation time, so the suite files under `data_contracts/suites/` do not change with the clock.
Regenerate them with `python -m data_contracts.expectations` (or `write_suites()`).

Great Expectations imports slowly (6-10 s), so it is imported inside the functions that need it.
Validation uses one ephemeral context per process (created lazily, guarded by a lock).
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from data_contracts.schema import EVENT_TYPES, EVENTS_SCHEMA, ITEMS_SCHEMA

SUITES_DIR = Path(__file__).resolve().parent / "suites"
RAW_SUITES: tuple[str, ...] = ("raw_events", "raw_items")
MART_SUITES: tuple[str, ...] = ("fct_events", "fct_sessions", "fct_user_item_interactions", "dim_users", "dim_items",
                                "fct_item_covisitation")
SUITE_NAMES: tuple[str, ...] = RAW_SUITES + MART_SUITES
SEVERITIES: tuple[str, ...] = ("critical", "warning")
# quality.marts defaults (persona/config.py holds the same values; validate() falls back to these).
MART_LIMITS: dict[str, float] = {"min_rows": 1, "max_session_hours": 24, "max_session_events": 2000,
                                 "max_anonymous_share": 0.5, "max_price": 10000}

# Events whose quantity counts units moved; a zero or negative quantity there is an error
# (the adapters quarantine the same rows as `nonpositive_quantity`).
UNIT_EVENT_TYPES: tuple[str, ...] = ("cart", "remove_from_cart", "checkout", "purchase", "return")
EVENTS_NOT_NULL: tuple[str, ...] = ("event_id", "ts", "event_type", "source", "source_file", "source_row")
SAMPLE_SIZE = 5

_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_SIZE}
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}


# --------------------------------------------------------------------------------------------------
# Suites
# --------------------------------------------------------------------------------------------------

def _events_expectations() -> list:
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    E = gx.expectations
    out: list = [E.ExpectColumnToExist(column=f.name) for f in EVENTS_SCHEMA]
    out += [E.ExpectColumnValuesToNotBeNull(column=c) for c in EVENTS_NOT_NULL]
    out += [
        E.ExpectColumnValuesToBeUnique(column="event_id", notes="event_id is the primary key."),
        E.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES),
                                      notes="Only canonical event types (schema.EVENT_TYPES)."),
        E.ExpectColumnValuesToNotBeNull(column="item_id", row_condition=Column("event_type") != "search",
                                        notes="Every event except search refers to an item."),
        E.ExpectColumnValuesToBeBetween(column="price", min_value=0, notes="Price, when known, is not negative."),
        E.ExpectColumnValuesToBeBetween(column="quantity", min_value=0, strict_min=True,
                                        row_condition=Column("event_type").is_in(list(UNIT_EVENT_TYPES)),
                                        notes="Unit-moving events have a positive quantity when one is recorded."),
        E.ExpectColumnValuesToBeBetween(column="ts", min_value={"$PARAMETER": "earliest_ts"},
                                        max_value={"$PARAMETER": "latest_ts"},
                                        notes="earliest_ts = quality.earliest_ts; latest_ts = validation time "
                                              "+ quality.max_future_skew_hours."),
        E.ExpectColumnValuesToBeBetween(column="rating", min_value=1, max_value=5,
                                        notes="Review ratings are on a 1-5 scale when present."),
        E.ExpectColumnValuesToBeBetween(column="source_row", min_value=0, notes="0-based source row number."),
    ]
    return out


def _items_expectations() -> list:
    import great_expectations as gx

    E = gx.expectations
    out: list = [E.ExpectColumnToExist(column=f.name) for f in ITEMS_SCHEMA]
    out += [
        E.ExpectColumnValuesToNotBeNull(column="item_id", notes="item_id is the primary key."),
        E.ExpectColumnValuesToBeUnique(column="item_id", notes="item_id is the primary key."),
        E.ExpectColumnValuesToBeBetween(column="price", min_value=0, notes="Typical price, when known, is not negative."),
    ]
    return out


def _row_count(E) -> Any:
    return E.ExpectTableRowCountToBeBetween(min_value={"$PARAMETER": "min_rows"},
                                            notes="quality.marts.min_rows: an (almost) empty mart would train on nothing.")


def _key(E, *columns: str) -> list:
    out = [E.ExpectColumnValuesToNotBeNull(column=c, notes="Key column.") for c in columns]
    if len(columns) == 1:
        out.append(E.ExpectColumnValuesToBeUnique(column=columns[0], notes="Primary key."))
    else:
        out.append(E.ExpectCompoundColumnsToBeUnique(column_list=list(columns), notes="Composite primary key."))
    return out


def _warn_price(E) -> Any:
    return E.ExpectColumnValuesToBeBetween(column="price", min_value=0, max_value={"$PARAMETER": "max_price"},
                                           severity="warning",
                                           notes="quality.marts.max_price: a larger price is likely a unit error.")


def _fct_events_expectations() -> list:
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    E = gx.expectations
    return [_row_count(E), *_key(E, "event_id"),
            E.ExpectColumnValuesToNotBeNull(column="session_id"),
            E.ExpectColumnValuesToNotBeNull(column="ts"),
            E.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
            E.ExpectColumnValuesToNotBeNull(column="item_id", row_condition=Column("event_type") != "search",
                                            notes="Every event except search refers to an item."),
            E.ExpectColumnProportionOfNonNullValuesToBeBetween(
                column="user_id", min_value={"$PARAMETER": "min_identified_share"}, severity="warning",
                notes="1 - quality.marts.max_anonymous_share: mostly anonymous traffic leaves few profiles."),
            _warn_price(E)]


def _fct_sessions_expectations() -> list:
    import great_expectations as gx

    E = gx.expectations
    return [_row_count(E), *_key(E, "session_id"),
            E.ExpectColumnValuesToBeBetween(column="n_events", min_value=1),
            E.ExpectColumnValuesToBeBetween(column="duration_seconds", min_value=0),
            E.ExpectColumnValuesToBeBetween(
                column="duration_seconds", min_value=0, max_value={"$PARAMETER": "max_session_seconds"},
                severity="warning", notes="quality.marts.max_session_hours: longer sessions suggest a broken session key."),
            E.ExpectColumnValuesToBeBetween(
                column="n_events", min_value=1, max_value={"$PARAMETER": "max_session_events"}, severity="warning",
                notes="quality.marts.max_session_events: more events in one session suggest a bot or a broken key.")]


def _interactions_expectations() -> list:
    import great_expectations as gx

    E = gx.expectations
    return [_row_count(E), *_key(E, "user_id", "item_id"),
            E.ExpectColumnValuesToBeBetween(column="n_events", min_value=1),
            E.ExpectColumnValuesToNotBeNull(column="weighted_score", notes="The collaborative-filtering signal.")]


def _dim_users_expectations() -> list:
    import great_expectations as gx

    E = gx.expectations
    return [_row_count(E), *_key(E, "user_id"),
            E.ExpectColumnValuesToBeBetween(column="n_events", min_value=1),
            E.ExpectColumnValuesToBeBetween(column="recency_days", min_value=0),
            E.ExpectColumnValuesToBeBetween(column="monetary", min_value=0)]


def _dim_items_expectations() -> list:
    import great_expectations as gx

    E = gx.expectations
    rates = [E.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1, notes="A proportion of sessions.")
             for c in ("view_to_cart_rate", "cart_to_purchase_rate", "view_to_purchase_rate")]
    return [_row_count(E), *_key(E, "item_id"),
            E.ExpectColumnValuesToNotBeNull(column="in_catalog"),
            E.ExpectColumnValuesToBeBetween(column="popularity_all_time", min_value=0), *rates, _warn_price(E)]


def _covisitation_expectations() -> list:
    import great_expectations as gx

    E = gx.expectations
    # No row-count floor: a small shop can legitimately have no item pair seen twice.
    return [*_key(E, "item_id", "other_item_id"),
            E.ExpectColumnValuesToBeBetween(column="weight", min_value=0, max_value=1, strict_min=True),
            E.ExpectColumnValuesToBeBetween(column="rank_in_item", min_value=1)]


_BUILDERS = {"raw_events": _events_expectations, "raw_items": _items_expectations,
             "fct_events": _fct_events_expectations, "fct_sessions": _fct_sessions_expectations,
             "fct_user_item_interactions": _interactions_expectations, "dim_users": _dim_users_expectations,
             "dim_items": _dim_items_expectations, "fct_item_covisitation": _covisitation_expectations}
_NOTES = {
    "raw_events": "Canonical events table (data_contracts.schema.EVENTS_SCHEMA) as the adapters produce it. "
                  "Generated by data_contracts.expectations; do not edit by hand.",
    "raw_items": "Canonical items table (data_contracts.schema.ITEMS_SCHEMA) as the adapters produce it. "
                 "Generated by data_contracts.expectations; do not edit by hand.",
    **{m: f"dbt mart {m}: critical expectations run in the blocking check {m}_contract, warning ones in the "
          f"WARN check {m}_plausibility. Generated by data_contracts.expectations; do not edit by hand."
       for m in MART_SUITES},
}


_PARAMETERS = {
    "raw": {"earliest_ts": "quality.earliest_ts", "latest_ts": "validation time + quality.max_future_skew_hours"},
    "mart": {"min_rows": "quality.marts.min_rows", "max_session_seconds": "quality.marts.max_session_hours * 3600",
             "max_session_events": "quality.marts.max_session_events",
             "min_identified_share": "1 - quality.marts.max_anonymous_share", "max_price": "quality.marts.max_price"},
}


def _check_suite(name: str, severity: str | None = None) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown suite {name!r}; known: {list(SUITE_NAMES)}")
    if severity is not None and severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}; known: {list(SEVERITIES)}")


def _severity(expectation) -> str:
    return str(getattr(expectation.severity, "value", expectation.severity) or "critical").lower()


def build_suite(name: str, severity: str | None = None):
    """A fresh `great_expectations.ExpectationSuite` for `name` (one of SUITE_NAMES); with `severity`
    ('critical' / 'warning') only the expectations of that severity."""
    _check_suite(name, severity)
    import great_expectations as gx

    expectations = [e for e in _BUILDERS[name]() if severity is None or _severity(e) == severity]
    return gx.ExpectationSuite(
        name=name if severity is None else f"{name}.{severity}",
        expectations=expectations,
        notes=_NOTES[name],
        meta={"generated_by": "data_contracts.expectations.build_suite",
              "parameters": _PARAMETERS["raw" if name in RAW_SUITES else "mart"]},
    )


def has_expectations(name: str, severity: str) -> bool:
    """Whether suite `name` holds any expectation of `severity` (no WARN check for a mart without any)."""
    _check_suite(name, severity)
    return any(_severity(e) == severity for e in _BUILDERS[name]())


def suite_columns(name: str, severity: str | None = None) -> list[str]:
    """The columns the (severity-filtered) suite reads, so a check loads only those from a large mart."""
    _check_suite(name, severity)
    cols: list[str] = []
    for e in _BUILDERS[name]():
        if severity is not None and _severity(e) != severity:
            continue
        for c in ([getattr(e, "column", None)] + list(getattr(e, "column_list", None) or [])):
            if c and c not in cols:
                cols.append(c)
        cond = getattr(e, "row_condition", None)
        col = getattr(getattr(cond, "column", None), "name", None)
        if col and col not in cols:
            cols.append(col)
    return cols


def suite_json(name: str) -> dict:
    """The suite as a JSON-ready dict, without GE's random ids (so the files are reproducible)."""
    data = build_suite(name).to_json_dict()
    data.pop("id", None)
    for exp in data.get("expectations", []):
        exp.pop("id", None)
    # GE records its own version here; drop it so a GE upgrade alone does not rewrite the files.
    (data.get("meta") or {}).pop("great_expectations_version", None)
    return data


def write_suites(out_dir: str | os.PathLike = SUITES_DIR) -> list[Path]:
    """Write `<out_dir>/<suite>.json` for every suite; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SUITE_NAMES:
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(suite_json(name), indent=2, sort_keys=True, default=str) + "\n")
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------

@dataclass
class ValidationSummary:
    success: bool
    suite: str
    n_rows: int
    results: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    def to_markdown(self, only_failed: bool = False) -> str:
        rows = self.failed if only_failed else self.results
        status = "PASSED" if self.success else f"FAILED ({len(self.failed)} of {len(self.results)})"
        lines = [
            f"**{self.suite}**: {status} on {self.n_rows:,} rows",
            "",
            "| expectation | column | condition | ok | unexpected | % | samples |",
            "| --- | --- | --- | --- | ---: | ---: | --- |",
        ]
        for r in rows:
            pct = r.get("unexpected_percent")
            count = r.get("unexpected_count")
            samples = ", ".join(_short(v) for v in r.get("samples") or [])
            if r.get("exception"):
                samples = f"error: {_short(r['exception'], 80)}"
            lines.append(
                f"| {r['expectation']} | {r.get('column') or ''} | {_md(r.get('condition') or '')} "
                f"| {'yes' if r['success'] else '**no**'} | {'' if count is None else count} "
                f"| {'' if pct is None else f'{pct:.3g}'} | {_md(samples)} |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"success": self.success, "suite": self.suite, "n_rows": self.n_rows,
                "results": self.results, "failed": self.failed}


def _short(value: Any, n: int = 40) -> str:
    s = str(value)
    return s if len(s) <= n else s[: n - 1] + "…"


def _md(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _context_and_batch_definition():
    """One ephemeral context + pandas dataframe batch definition per process."""
    if "batch_definition" not in _STATE:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        try:
            ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        except Exception:  # cosmetic only
            pass
        asset = ctx.data_sources.add_pandas("persona_pandas").add_dataframe_asset("frame")
        _STATE["context"] = ctx
        _STATE["batch_definition"] = asset.add_batch_definition_whole_dataframe("whole_frame")
        _STATE["suites"] = {}
    return _STATE["context"], _STATE["batch_definition"]


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Dtype fixes that keep GE on its vectorised paths.

    GE 1.24's between-check is vectorised only for numpy int/float and datetime64[ns] columns; a
    datetime64[us] column (what Arrow's `to_pandas()` gives) or a nullable extension dtype falls back
    to a Python call per row (~4 s per 400k rows).
    """
    fixes = {}
    for col in df.columns:
        dtype = df[col].dtype
        if isinstance(dtype, pd.DatetimeTZDtype):
            if dtype.unit != "ns":
                fixes[col] = df[col].dt.as_unit("ns")
        elif pd.api.types.is_datetime64_dtype(dtype) and dtype != "datetime64[ns]":
            fixes[col] = df[col].astype("datetime64[ns]")
        elif isinstance(dtype, pd.api.extensions.ExtensionDtype) and pd.api.types.is_numeric_dtype(dtype) \
                and not pd.api.types.is_bool_dtype(dtype):
            fixes[col] = pd.Series(df[col].to_numpy(dtype="float64", na_value=math.nan), index=df.index)
    return df.assign(**fixes) if fixes else df


def _ts_bound(value: str | datetime, like: pd.Series | None) -> datetime:
    ts = pd.Timestamp(value)
    tz = getattr(getattr(like, "dtype", None), "tz", None)
    if tz is not None:
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
        ts = ts.tz_convert(tz)
    elif ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_pydatetime()


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, (pd.Timestamp, datetime)):
        return v.isoformat()
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        try:
            return v.item()
        except Exception:
            return str(v)
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _condition_text(cond: Any) -> str | None:
    if cond is None:
        return None
    if isinstance(cond, dict):
        col = (cond.get("column") or {}).get("name")
        param = cond.get("parameter")
        return f"{col} {cond.get('operator')} {param!r}" if col else json.dumps(cond, default=str)
    return str(cond)


def _result_row(r) -> dict:
    cfg = r.expectation_config
    kwargs = dict(cfg.kwargs)
    res = r.result or {}
    exc = r.exception_info or {}
    # exception_info is either {raised_exception, exception_message, ...} or {metric_id: {...}, ...}.
    if exc and "raised_exception" not in exc:
        exc = next((v for v in exc.values() if isinstance(v, dict) and v.get("raised_exception")), {})
    raised = bool(exc.get("raised_exception"))
    cond = kwargs.get("row_condition")
    if hasattr(cond, "to_dict"):
        cond = cond.to_dict()
    elif hasattr(cond, "dict"):
        cond = cond.dict()
    samples = [_jsonable(v) for v in (res.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]]
    bounds = {k: _jsonable(kwargs[k]) for k in ("min_value", "max_value", "value_set") if k in kwargs}
    return {
        "expectation": cfg.type,
        "column": kwargs.get("column") or ", ".join(kwargs.get("column_list") or []) or None,
        "condition": _condition_text(cond),
        "kwargs": bounds,
        "success": bool(r.success),
        "severity": str(getattr(cfg, "severity", "critical") or "critical").split(".")[-1].lower(),
        "element_count": res.get("element_count"),
        "unexpected_count": res.get("unexpected_count"),
        "unexpected_percent": res.get("unexpected_percent"),
        "samples": samples,
        "sample": samples[0] if samples else None,  # first sample alone, for one-line alerts
        "exception": exc.get("exception_message") if raised else None,
    }


def mart_parameters(limits: dict | None = None) -> dict[str, float]:
    """Suite parameters of the mart suites from `quality.marts` (missing keys: MART_LIMITS)."""
    m = {**MART_LIMITS, **(limits or {})}
    return {"min_rows": int(m["min_rows"]), "max_session_seconds": float(m["max_session_hours"]) * 3600,
            "max_session_events": float(m["max_session_events"]),
            "min_identified_share": 1.0 - float(m["max_anonymous_share"]), "max_price": float(m["max_price"])}


def validate(df: pd.DataFrame, suite: str, *, earliest_ts: str | datetime = "2000-01-01",
             max_future_skew_hours: float = 24, now: datetime | None = None, severity: str | None = None,
             mart_limits: dict | None = None) -> ValidationSummary:
    """Validate `df` against suite `suite` (one of SUITE_NAMES), or only its `severity` half.

    `earliest_ts` / `max_future_skew_hours` come from `quality.*` in the settings; the upper bound
    for `ts` is `now` (default: the current UTC time, naive) plus `max_future_skew_hours`.
    `mart_limits` is `quality.marts` (used by the mart suites).
    Never raises for bad data: a missing column or an expectation that errors is a failed result.
    """
    _check_suite(suite, severity)
    frame = _prepare(df)
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    like = frame["ts"] if "ts" in frame.columns else None
    if suite in RAW_SUITES:
        params = {
            "earliest_ts": _ts_bound(earliest_ts, like),
            "latest_ts": _ts_bound(pd.Timestamp(now) + timedelta(hours=float(max_future_skew_hours)), like),
        }
    else:
        params = mart_parameters(mart_limits)
    key = suite if severity is None else f"{suite}.{severity}"
    with _LOCK:
        _, batch_definition = _context_and_batch_definition()
        gx_suite = _STATE["suites"].get(key)
        if gx_suite is None:
            gx_suite = _STATE["suites"][key] = build_suite(suite, severity)
        batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(gx_suite, result_format=_RESULT_FORMAT, expectation_parameters=params)
    rows = [_result_row(r) for r in result.results]
    failed = [r for r in rows if not r["success"]]
    return ValidationSummary(success=bool(result.success) and not failed, suite=key, n_rows=len(df),
                             results=rows, failed=failed)


if __name__ == "__main__":
    for p in write_suites():
        print(p)
