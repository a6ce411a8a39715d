"""Data-quality checks: Great Expectations suites on the raw tables and on every dbt mart, plus the
quarantine rate.

Blocking checks (severity ERROR: the raw suites, `quarantine_rate`, each mart's `<mart>_contract` with the
suite's critical expectations) stop everything downstream in the run when they fail. WARN checks (each mart's
`<mart>_plausibility` with the suite's warning expectations: session length, events per session, share of
anonymous events, price ceiling) let downstream run. Either kind appends an alert with its severity
("error" / "warn") to the JSONL log (and the webhook, when configured) and leaves the expectation-by-
expectation table as check metadata.
"""


import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, AssetKey, MetadataValue, asset_check

from orchestration.resources import PersonaConfig, Warehouse
from persona.alerts import Alert, send_alert


def _alert(settings, asset: str, check: str, message: str, counts: dict, samples: list[dict],
           severity: str = "error") -> None:
    send_alert(Alert(severity, asset, check, message, counts, samples[:5]),
               jsonl_path=settings.alerts_path, webhook_url=settings["alerts"]["webhook_url"])


def _suite_check(persona: PersonaConfig, warehouse: Warehouse, table: str) -> AssetCheckResult:
    from data_contracts.expectations import validate

    settings = persona.settings()
    df = warehouse.read(settings, f'select * from "{table}"')
    q = settings["quality"]
    summary = validate(df, table, earliest_ts=str(q["earliest_ts"]), max_future_skew_hours=float(q["max_future_skew_hours"]))
    if not summary.success:
        failed = summary.failed
        _alert(settings, table, f"{table}_contract",
               f"{len(failed)} expectation(s) failed on {table} ({summary.n_rows:,} rows)",
               {"rows": summary.n_rows, "failed_expectations": len(failed)},
               [{k: r.get(k) for k in ("expectation", "column", "unexpected_count", "samples")} for r in failed])
    return AssetCheckResult(
        passed=summary.success, severity=AssetCheckSeverity.ERROR,
        metadata={"rows": summary.n_rows, "expectations": len(summary.results), "failed": len(summary.failed),
                  "results": MetadataValue.md(summary.to_markdown())})


@asset_check(asset=AssetKey("raw_events"), blocking=True,
             description="Great Expectations suite `raw_events`: keys, allowed event types, item ids, prices, time range.")
def raw_events_contract(persona: PersonaConfig, warehouse: Warehouse) -> AssetCheckResult:
    return _suite_check(persona, warehouse, "raw_events")


@asset_check(asset=AssetKey("raw_items"), blocking=True,
             description="Great Expectations suite `raw_items`: unique non-null ids, non-negative prices.")
def raw_items_contract(persona: PersonaConfig, warehouse: Warehouse) -> AssetCheckResult:
    return _suite_check(persona, warehouse, "raw_items")


def quarantine_limit(settings, source: str) -> float:
    """The quarantine-rate threshold of one source: quality.max_quarantine_rate_by_source, else the default."""
    by_source = settings["quality"].get("max_quarantine_rate_by_source") or {}
    return float(by_source.get(source, settings["quality"]["max_quarantine_rate"]))


def reconcile(warehouse: Warehouse, settings) -> pd.DataFrame:
    """Per source file: rows the adapter read (ingest_log) vs rows in raw_events + quarantine_events."""
    from persona.warehouse import table_exists

    landed = warehouse.read(settings, """
        with e as (select source, source_file, count(*) n from raw_events group by all),
             q as (select source, source_file, count(*) n from quarantine_events group by all)
        select coalesce(e.source, q.source) as source, coalesce(e.source_file, q.source_file) as source_file,
               coalesce(e.n, 0) as accepted, coalesce(q.n, 0) as quarantined
        from e full outer join q on e.source = q.source and e.source_file = q.source_file""")
    if table_exists(warehouse.resolve(settings), "ingest_log"):
        log = warehouse.read(settings, "select source_file, rows_in, sha256 from ingest_log")
        out = log.merge(landed, on="source_file", how="outer")
    else:  # tables loaded by something else: rows in = what landed
        out = landed.assign(rows_in=landed["accepted"] + landed["quarantined"], sha256=None)
    for c in ("accepted", "quarantined", "rows_in"):
        out[c] = out[c].fillna(0).astype("int64")
    out["source"] = out["source"].fillna(settings["source"]["adapter"])
    out["reconciled"] = out["rows_in"] == out["accepted"] + out["quarantined"]
    return out


@asset_check(asset=AssetKey("raw_events"), blocking=True, additional_deps=[AssetKey("quarantine_events")],
             description="Reconciliation per source file (rows the adapter read = accepted + quarantined) and "
                         "the quarantine rate per source within quality.max_quarantine_rate(_by_source).")
def quarantine_rate(persona: PersonaConfig, warehouse: Warehouse) -> AssetCheckResult:
    settings = persona.settings()
    files = reconcile(warehouse, settings)
    reasons = warehouse.read(settings, "select reason, count(*) n from quarantine_events group by 1 order by 2 desc")
    rows_in, accepted, quarantined = (int(files[c].sum()) for c in ("rows_in", "accepted", "quarantined"))
    per_source = files.groupby("source")[["rows_in", "quarantined"]].sum()
    per_source["rate"] = per_source["quarantined"] / per_source["rows_in"].clip(lower=1)
    per_source["limit"] = [quarantine_limit(settings, s) for s in per_source.index]
    breached = per_source[per_source["rate"] > per_source["limit"]]
    unreconciled = files[~files["reconciled"]]
    rate = quarantined / rows_in if rows_in else 0.0
    limit = (float(per_source["limit"].iloc[0]) if len(per_source) == 1
             else float(settings["quality"]["max_quarantine_rate"]))
    passed = rows_in > 0 and breached.empty and unreconciled.empty
    if not passed:
        problems = []
        if not rows_in:
            problems.append("no rows loaded")
        for src, r in breached.iterrows():
            problems.append(f"quarantine rate {r['rate']:.2%} exceeds {r['limit']:.2%} for source {src}")
        for _, r in unreconciled.iterrows():
            problems.append(f"{r['source_file']}: {r['rows_in']:,} rows in != {r['accepted']:,} accepted "
                            f"+ {r['quarantined']:,} quarantined")
        samples = warehouse.read(
            settings, "select source_file, source_row, reason, field, raw from quarantine_events limit 5")
        _alert(settings, "quarantine_events", "quarantine_rate", "; ".join(problems),
               {"rows_in": rows_in, "accepted": accepted, "quarantined": quarantined, "rate": round(rate, 6),
                "limit": limit}, samples.to_dict(orient="records"))
    table = ["| source file | rows in | accepted | quarantined | reconciled |", "|---|---:|---:|---:|---|"]
    table += [f"| {r['source_file']} | {r['rows_in']:,} | {r['accepted']:,} | {r['quarantined']:,} | "
              f"{'yes' if r['reconciled'] else '**no**'} |" for _, r in files.head(50).iterrows()]
    return AssetCheckResult(passed=passed, severity=AssetCheckSeverity.ERROR, metadata={
        "rows_in": rows_in, "accepted": accepted, "quarantined": quarantined, "rate": rate, "limit": limit,
        "files": MetadataValue.md("\n".join(table)),
        "reasons": MetadataValue.json(dict(zip(reasons["reason"], map(int, reasons["n"]))) if len(reasons) else {})})


# --------------------------------------------------------------------------------------------------
# dbt marts: one GE suite each (data_contracts/suites/<mart>.json), split by expectation severity
# --------------------------------------------------------------------------------------------------

def _mart_check(persona: PersonaConfig, warehouse: Warehouse, mart: str, severity: str) -> AssetCheckResult:
    from data_contracts.expectations import suite_columns, validate

    settings = persona.settings()
    columns = ", ".join(f'"{c}"' for c in suite_columns(mart, severity))
    df = warehouse.read(settings, f'select {columns} from "{mart}"')
    summary = validate(df, mart, severity=severity, mart_limits=settings["quality"].get("marts"))
    blocking = severity == "critical"
    check = f"{mart}_{'contract' if blocking else 'plausibility'}"
    if not summary.success:
        failed = summary.failed
        _alert(settings, mart, check,
               f"{len(failed)} {severity} expectation(s) failed on {mart} ({summary.n_rows:,} rows)"
               + ("" if blocking else "; downstream continues"),
               {"rows": summary.n_rows, "failed_expectations": len(failed)},
               [{k: r.get(k) for k in ("expectation", "column", "kwargs", "unexpected_count", "samples")}
                for r in failed], severity="error" if blocking else "warn")
    return AssetCheckResult(
        passed=summary.success, severity=AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN,
        metadata={"rows": summary.n_rows, "expectations": len(summary.results), "failed": len(summary.failed),
                  "results": MetadataValue.md(summary.to_markdown())})


def _mart_checks(mart: str, what: str) -> tuple:
    """`<mart>_contract` (blocking) and, when the suite has warning expectations, `<mart>_plausibility` (WARN)."""
    from data_contracts.expectations import has_expectations

    @asset_check(asset=AssetKey(mart), name=f"{mart}_contract", blocking=True,
                 description=f"Great Expectations suite `{mart}`, critical expectations: {what}. "
                             "A failure stops everything downstream.")
    def contract(persona: PersonaConfig, warehouse: Warehouse) -> AssetCheckResult:
        return _mart_check(persona, warehouse, mart, "critical")

    if not has_expectations(mart, "warning"):
        return contract, None

    @asset_check(asset=AssetKey(mart), name=f"{mart}_plausibility", blocking=False,
                 description=f"Great Expectations suite `{mart}`, warning expectations (limits in quality.marts). "
                             "A failure alerts (severity warn) and lets downstream run.")
    def plausibility(persona: PersonaConfig, warehouse: Warehouse) -> AssetCheckResult:
        return _mart_check(persona, warehouse, mart, "warning")

    return contract, plausibility


fct_events_contract, fct_events_plausibility = _mart_checks(
    "fct_events", "at least min_rows rows, event_id unique and non-null, session and time present, canonical "
                  "event types, an item on every non-search event")
fct_sessions_contract, fct_sessions_plausibility = _mart_checks(
    "fct_sessions", "at least min_rows rows, session_id unique and non-null, n_events >= 1, duration >= 0")
fct_user_item_interactions_contract, _ = _mart_checks(
    "fct_user_item_interactions", "at least min_rows rows, (user_id, item_id) unique and non-null, n_events >= 1, "
                                  "weighted_score present")
dim_users_contract, _ = _mart_checks(
    "dim_users", "at least min_rows rows, user_id unique and non-null, n_events >= 1, recency and monetary >= 0")
dim_items_contract, dim_items_plausibility = _mart_checks(
    "dim_items", "at least min_rows rows, item_id unique and non-null, popularity >= 0, funnel rates in [0, 1]")
fct_item_covisitation_contract, _ = _mart_checks(
    "fct_item_covisitation", "(item_id, other_item_id) unique and non-null, weight in (0, 1], rank_in_item >= 1")
