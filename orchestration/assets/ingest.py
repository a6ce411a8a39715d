"""Ingest: a source adapter maps the shop's log into the canonical raw tables and the quarantine.

The asset and `persona ingest` share one code path (`data_contracts.adapters.load_source`). It loads
`source.path` plus the files of `source.inbox` (orchestration/inbox.py), each content hash once. Besides the
three tables it writes `ingest_log`: one row per source file with its content hash and the counts the
adapter saw (rows in, accepted, quarantined), which the blocking `quarantine_rate` check reconciles
against the tables.
"""

from datetime import datetime, timezone

import pandas as pd
from dagster import AssetExecutionContext, AssetSpec, MaterializeResult, MetadataValue, multi_asset

from data_contracts.adapters import AdapterResult, load_source
from data_contracts.privacy import Pseudonymizer
from orchestration.inbox import LoadPlan, plan, previous_loads
from orchestration.resources import PersonaConfig, Warehouse

GROUP = "ingest"


def _reasons_md(reasons: dict[str, int], repairs: dict[str, int]) -> str:
    rows = ["| kind | code | rows |", "|---|---|---|"]
    rows += [f"| quarantined | {k} | {v:,} |" for k, v in reasons.items()]
    rows += [f"| repaired | {k} | {v:,} |" for k, v in repairs.items()]
    return "\n".join(rows) if len(rows) > 2 else "nothing quarantined or repaired"


def ingest_log(result: AdapterResult, load: LoadPlan, adapter: str,
               previous: dict[str, object] | None = None) -> pd.DataFrame:
    """One row per loaded source file: content hash, the adapter's count of rows in, and what landed where.
    `loaded_at` is kept from `previous` (sha256 -> loaded_at) for content already loaded, so re-ingesting the
    same files leaves the table unchanged. Repeated content (`load.duplicates`) is not loaded or listed."""
    ev = result.events.select(["source_file"]).to_pandas()["source_file"].value_counts()
    q = result.quarantine.select(["source_file"]).to_pandas()["source_file"].value_counts()
    it = len(result.items) if result.unit == "items" else 0
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    previous = previous or {}
    rows = []
    for f in load.files:
        accepted = int(ev.get(f.name, 0)) if result.unit == "events" else it
        quarantined = int(q.get(f.name, 0))
        rows_in = result.file_rows.get(f.name, accepted + quarantined)
        digest = load.hashes[str(f)]
        rows.append({"adapter": adapter, "source_file": f.name, "path": str(f), "sha256": digest,
                     "rows_in": int(rows_in), "accepted": accepted, "quarantined": quarantined,
                     "loaded_at": previous.get(digest, now)})
    return pd.DataFrame(rows)


@multi_asset(
    specs=[
        AssetSpec("raw_events", group_name=GROUP,
                  description="Canonical behaviour events from the configured source adapter, with lineage "
                              "(source, source_file, source_row)."),
        AssetSpec("raw_items", group_name=GROUP, description="Canonical item catalog derived by the adapter."),
        AssetSpec("quarantine_events", group_name=GROUP,
                  description="Source rows the adapter rejected, each with a reason code, the offending field "
                              "and the raw row as JSON."),
    ],
)
def ingest_source(context: AssetExecutionContext, persona: PersonaConfig, warehouse: Warehouse):
    settings = persona.settings()
    name = settings["source"]["adapter"]
    path = settings.source_path
    mapping = settings["source"].get("mapping")
    mapping = settings.path(mapping) if mapping else None
    context.log.info(f"loading {path} with adapter {name}" + (f" and mapping {mapping}" if mapping else ""))
    pseudo = Pseudonymizer.from_settings(settings)   # creates the key file on first use; the key is never logged
    context.log.info(pseudo.describe())
    key = pseudo.key
    previous = previous_loads(warehouse, settings)
    load = plan(settings, {h: f for h, (f, _) in previous.items()})  # source.path + inbox, each content once
    for f, original in load.duplicates:
        context.log.info(f"{f.name}: same content as {original}, already loaded: skipped")
    result = load_source(load.files, name, mapping=mapping, quality=settings["quality"], pseudonym_key=key)
    log = ingest_log(result, load, name, {h: t for h, (_, t) in previous.items()})
    warehouse.replace(settings, {"raw_events": result.events, "raw_items": result.items,
                                 "quarantine_events": result.quarantine, "ingest_log": log})
    s = result.summary()
    context.log.info(f"{s['rows_in']:,} rows in, {s['accepted']:,} accepted, {s['quarantined']:,} quarantined")
    ts = result.events.column("ts")
    yield MaterializeResult(asset_key="raw_events", metadata={
        "source": name, "path": str(path), "rows_in": s["rows_in"], "accepted": s["accepted"],
        "quarantined": s["quarantined"], "quarantine_rate": s["quarantined"] / max(s["rows_in"], 1),
        "dagster/row_count": s["events"],
        "ts_min": str(ts.combine_chunks().to_pandas().min()) if s["events"] else "",
        "ts_max": str(ts.combine_chunks().to_pandas().max()) if s["events"] else "",
        "files": len(load.files), "duplicate_files": len(load.duplicates), "repairs": MetadataValue.json(s["repairs"]),
        "pseudonymized": result.pseudonymized, "pseudonym_key": pseudo.origin,
        "reasons": MetadataValue.md(_reasons_md(s["reasons"], s["repairs"])),
    })
    yield MaterializeResult(asset_key="raw_items", metadata={"dagster/row_count": s["items"]})
    yield MaterializeResult(asset_key="quarantine_events", metadata={
        "dagster/row_count": s["quarantined"], "rows_in": s["rows_in"],
        "reasons": MetadataValue.json(s["reasons"])})
