"""Source adapters: one module per log format, each mapping to the canonical tables.

`ADAPTERS` maps the name used in `persona.yaml` (`source.adapter`) and in `persona ingest --format` to the
loader. Every loader is `load(path, *, limits=Limits(...), **options) -> AdapterResult`; the generic
adapter (`mapping`) also needs `mapping=` (a YAML file or dict). `load_source` is the one entry point the
Dagster asset and the CLI share: it resolves the adapter, reads a file or every file of a folder, and
reconciles rows in = accepted + quarantined. Adapter reference: docs/adapters.md.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from data_contracts.adapters import amazon_reviews, ga_merch, ga_sessions, generic, icecat, rees46, uci_retail
from data_contracts.adapters.base import AdapterResult, Limits, SourceError
from data_contracts.schema import QUARANTINE_SCHEMA

ADAPTERS = {
    ga_merch.NAME: ga_merch.load,
    ga_sessions.NAME: ga_sessions.load,
    uci_retail.NAME: uci_retail.load,
    rees46.NAME: rees46.load,
    amazon_reviews.NAME: amazon_reviews.load,
    icecat.NAME: icecat.load,
    generic.NAME: generic.load,
}


# Raw fields that identify a person, per adapter: pseudonymized inside the quarantine's raw JSON too.
ID_FIELDS = {
    ga_merch.NAME: {"full_visitor_id": "user", "session_id": "session"},
    ga_sessions.NAME: {"full_visitor_id": "user", "session_id": "session"},
    uci_retail.NAME: {"CustomerID": "user", "InvoiceNo": "session"},
    rees46.NAME: {"user_id": "user", "user_session": "session"},
    amazon_reviews.NAME: {"reviewerID": "user", "reviewerName": "name"},
    icecat.NAME: {},
}


def get_adapter(name: str):
    try:
        return ADAPTERS[name]
    except KeyError:
        raise SourceError(f"unknown adapter {name!r}; available: {sorted(ADAPTERS)}") from None


def source_files(path: Path) -> list[Path]:
    """The file itself, or the data files of a folder (sorted; hidden files and *.yaml/*.md skipped)."""
    if not path.exists():
        raise SourceError(f"{path}: file not found")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() not in {".yaml", ".yml", ".md", ".txt"})
    if not files:
        raise SourceError(f"{path}: folder holds no data files")
    return files


def load_source(path: str | Path | list[Path], adapter: str | None = None, *, mapping: str | Path | dict | None = None,
                limits: Limits | None = None, quality: dict | None = None,
                pseudonym_key: bytes | None = None) -> AdapterResult:
    """Load a file (or every file of a folder) with adapter `adapter` (`mapping` given = the generic one).

    `limits` (or `quality`, the settings' `quality` section) sets the time window and text limits.
    `pseudonym_key` (data_contracts.privacy.load_key) replaces user and session ids by their keyed hash.
    """
    if adapter is None:
        adapter = generic.NAME if mapping is not None else None
    if adapter is None:
        raise SourceError("give an adapter name (--format / source.adapter) or a mapping file (--mapping)")
    load = get_adapter(adapter)
    limits = limits or Limits.from_quality(quality)
    options = {"mapping": mapping} if mapping is not None else {}
    results = []
    files = [Path(p) for p in path] if isinstance(path, (list, tuple)) else source_files(Path(path))
    if not files:
        raise SourceError("no files to load")
    for f in files:
        r = load(f, limits=limits, **options)
        r.file_rows = {f.name: r.rows_in}
        results.append(r)
    result = results[0] if len(results) == 1 else combine(results)
    if adapter == generic.NAME:
        cols = generic.read_mapping(mapping)["columns"]
        result.id_fields = {cols[f]: k for f, k in (("user_id", "user"), ("session_id", "session")) if f in cols}
    else:
        result.id_fields = dict(ID_FIELDS.get(adapter, {}))
    if pseudonym_key is not None:
        from data_contracts.privacy import pseudonymize_result

        pseudonymize_result(result, pseudonym_key)
    return result


def combine(results: list[AdapterResult]) -> AdapterResult:
    """Several files of one source as one load. Items: the latest file's row wins for an item id."""
    events = pa.concat_tables([r.events for r in results])
    quarantine = pa.concat_tables([r.quarantine.cast(QUARANTINE_SCHEMA) for r in results])
    items = pa.concat_tables([r.items for r in results]).to_pandas()
    if results[0].unit == "items" and items["item_id"].duplicated().any():
        dup = items.loc[items["item_id"].duplicated(), "item_id"].iloc[0]
        raise SourceError(f"catalog item {dup!r} appears in more than one file of the folder; "
                          "load the files one by one")
    items = items.drop_duplicates("item_id", keep="last").sort_values("item_id")
    repairs: dict[str, int] = {}
    for r in results:
        for k, v in r.repairs.items():
            repairs[k] = repairs.get(k, 0) + v
    items_t = pa.Table.from_pandas(items.reset_index(drop=True), schema=results[0].items.schema,
                                   preserve_index=False)
    file_rows = {k: v for r in results for k, v in r.file_rows.items()}
    return AdapterResult(events, items_t, quarantine, sum(r.rows_in for r in results), repairs, results[0].unit,
                         file_rows)


__all__ = ["ADAPTERS", "AdapterResult", "Limits", "SourceError", "get_adapter", "load_source", "combine"]
