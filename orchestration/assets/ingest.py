"""Ingest: a source adapter maps the shop's log into the canonical raw tables and the quarantine."""

from dagster import AssetExecutionContext, AssetSpec, MaterializeResult, MetadataValue, multi_asset

from data_contracts.adapters import get_adapter
from orchestration.resources import PersonaConfig, Warehouse

GROUP = "ingest"


def _reasons_md(reasons: dict[str, int], repairs: dict[str, int]) -> str:
    rows = ["| kind | code | rows |", "|---|---|---|"]
    rows += [f"| quarantined | {k} | {v:,} |" for k, v in reasons.items()]
    rows += [f"| repaired | {k} | {v:,} |" for k, v in repairs.items()]
    return "\n".join(rows) if len(rows) > 2 else "nothing quarantined or repaired"


@multi_asset(
    specs=[
        AssetSpec("raw_events", group_name=GROUP,
                  description="Canonical behaviour events from the configured source adapter, with lineage "
                              "(source, source_file, source_row)."),
        AssetSpec("raw_items", group_name=GROUP, description="Canonical item catalog derived by the adapter."),
        AssetSpec("quarantine_events", group_name=GROUP,
                  description="Source rows the adapter rejected, each with a reason code and the raw row as JSON."),
    ],
)
def ingest_source(context: AssetExecutionContext, persona: PersonaConfig, warehouse: Warehouse):
    settings = persona.settings()
    name = settings["source"]["adapter"]
    path = settings.source_path
    context.log.info(f"loading {path} with adapter {name}")
    result = get_adapter(name)(path, earliest_ts=str(settings["quality"]["earliest_ts"]))
    warehouse.replace(settings, {"raw_events": result.events, "raw_items": result.items,
                                 "quarantine_events": result.quarantine})
    s = result.summary()
    context.log.info(f"{s['rows_in']:,} rows in, {s['accepted']:,} accepted, {s['quarantined']:,} quarantined")
    ts = result.events.column("ts")
    yield MaterializeResult(asset_key="raw_events", metadata={
        "source": name, "path": str(path), "rows_in": s["rows_in"], "accepted": s["accepted"],
        "quarantined": s["quarantined"], "quarantine_rate": s["quarantined"] / max(s["rows_in"], 1),
        "dagster/row_count": s["accepted"],
        "ts_min": str(ts.combine_chunks().to_pandas().min()) if s["accepted"] else "",
        "ts_max": str(ts.combine_chunks().to_pandas().max()) if s["accepted"] else "",
        "reasons": MetadataValue.md(_reasons_md(s["reasons"], s["repairs"])),
    })
    yield MaterializeResult(asset_key="raw_items", metadata={"dagster/row_count": s["items"]})
    yield MaterializeResult(asset_key="quarantine_events", metadata={
        "dagster/row_count": s["quarantined"], "rows_in": s["rows_in"],
        "reasons": MetadataValue.json(s["reasons"])})
