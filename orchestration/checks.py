"""Blocking data-quality checks on the raw tables (Great Expectations suites + quarantine rate).
A failing check stops everything downstream in the run and appends an alert to the JSONL log
(and the webhook, when configured).
"""


from dagster import AssetCheckResult, AssetCheckSeverity, AssetKey, MetadataValue, asset_check

from orchestration.resources import PersonaConfig, Warehouse
from persona.alerts import Alert, send_alert


def _alert(settings, asset: str, check: str, message: str, counts: dict, samples: list[dict]) -> None:
    send_alert(Alert("error", asset, check, message, counts, samples[:5]),
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


@asset_check(asset=AssetKey("raw_events"), blocking=True, additional_deps=[AssetKey("quarantine_events")],
             description="Reconciliation (rows in = accepted + quarantined) and quarantine rate within "
                         "quality.max_quarantine_rate.")
def quarantine_rate(persona: PersonaConfig, warehouse: Warehouse) -> AssetCheckResult:
    settings = persona.settings()
    accepted = int(warehouse.read(settings, "select count(*) n from raw_events")["n"].iloc[0])
    reasons = warehouse.read(settings, "select reason, count(*) n from quarantine_events group by 1 order by 2 desc")
    quarantined = int(reasons["n"].sum()) if len(reasons) else 0
    rows_in = accepted + quarantined
    rate = quarantined / rows_in if rows_in else 0.0
    limit = float(settings["quality"]["max_quarantine_rate"])
    passed = rows_in > 0 and rate <= limit
    if not passed:
        samples = warehouse.read(settings, "select source_file, source_row, reason, field, raw from quarantine_events limit 5")
        _alert(settings, "quarantine_events", "quarantine_rate",
               f"quarantine rate {rate:.2%} exceeds {limit:.2%}" if rows_in else "no rows loaded",
               {"rows_in": rows_in, "quarantined": quarantined}, samples.to_dict(orient="records"))
    return AssetCheckResult(passed=passed, severity=AssetCheckSeverity.ERROR, metadata={
        "rows_in": rows_in, "accepted": accepted, "quarantined": quarantined, "rate": rate, "limit": limit,
        "reasons": MetadataValue.json(dict(zip(reasons["reason"], map(int, reasons["n"]))) if len(reasons) else {})})
