"""Any CSV / Parquet / JSON-lines event log, described by a YAML column mapping instead of code.

A mapping file (full reference and examples: docs/adapters.md):

```yaml
source: my_shop               # recorded in raw_events.source (default: the mapping file's name)
format: csv                   # csv | parquet | jsonl (default: from the data file's extension)
delimiter: ","                # csv only
encoding: utf-8
timezone: Europe/Berlin       # zone of timestamps written without an offset (default UTC)
timestamp_format: null        # strptime format; default: ISO 8601, then pandas' guess per value
timestamp_unit: null          # s | ms | us when the time column holds epoch numbers
columns:                      # canonical field: source column
  ts: created_at              # required
  event_type: action          # required, unless `event_type:` below gives a constant
  item_id: sku                # required (null allowed only on search events)
  user_id: customer           # optional; empty / anonymous_users values = anonymous event
  session_id: visit
  price: unit_price
  quantity: qty
  query: search_terms
  rating: stars
  review_text: comment
  title: product_name         # item attributes, aggregated into raw_items (most frequent value)
  category_path: category
  brand: brand
  description: product_text
  image_url: image
event_type: purchase          # constant event type when the file has no event column
event_types:                  # source value -> canonical type; unmapped values are quarantined
  pageview: view
  add_to_basket: cart
price_scale: 1.0              # e.g. 0.01 when prices are in cents
category_separator: ">"       # the path separator used in the category column (turned into "/")
junk_values: ["(not set)"]    # placeholder values that mean "unknown" (become null)
anonymous_users: ["0", "guest"]
```

Row rules are the shared ones (`Flags.standard`, in order): malformed / undecodable line, exact duplicate
row, value of the wrong type, missing or out-of-range time, unknown event type, item id missing, negative
price, zero/negative quantity on a unit-moving event, rating outside 1-5. A price of 0 becomes null (a
repair); overlong text is cut and PII in free text is masked (repairs, counted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from data_contracts.adapters.base import (AdapterResult, CsvRecords, Flags, Limits, SourceError, assemble,
                                          duplicate_mask, events_frame, items_from_events, null_strings,
                                          parse_timestamps, read_csv_records, read_json_lines, require_columns,
                                          resolve_limits, to_json, to_number)
from data_contracts.schema import EVENT_TYPES

NAME = "mapping"
EVENT_FIELDS = ("ts", "event_type", "item_id", "user_id", "session_id", "price", "quantity", "query", "rating",
                "review_text")
ITEM_FIELDS = ("title", "category_path", "brand", "description", "image_url")
FORMATS = ("csv", "parquet", "jsonl")
KEYS = {"source", "format", "delimiter", "encoding", "timezone", "timestamp_format", "timestamp_unit", "columns",
        "event_type", "event_types", "price_scale", "category_separator", "junk_values", "anonymous_users"}


class MappingError(SourceError):
    """The mapping file itself is unusable; the message names the file and the key."""


def read_mapping(mapping: str | Path | dict) -> dict:
    """Load and validate a mapping (a YAML file or an already-parsed dict)."""
    where = "mapping"
    if not isinstance(mapping, dict):
        where = str(mapping)
        try:
            text = Path(mapping).read_text()
        except OSError as exc:
            raise MappingError(f"{mapping}: cannot read the mapping file ({exc})") from exc
        try:
            mapping = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise MappingError(f"{where}: not valid YAML: {exc}") from exc
        if not isinstance(mapping, dict):
            raise MappingError(f"{where}: must hold a mapping at top level")
        mapping.setdefault("source", Path(where).stem)
    unknown = set(mapping) - KEYS
    if unknown:
        raise MappingError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(KEYS)}")
    cols = mapping.get("columns")
    if not isinstance(cols, dict) or not cols:
        raise MappingError(f"{where}: `columns` must map canonical fields to source columns")
    bad = set(cols) - set(EVENT_FIELDS) - set(ITEM_FIELDS)
    if bad:
        raise MappingError(f"{where}: columns: unknown canonical field(s) {sorted(bad)}; "
                           f"allowed: {list(EVENT_FIELDS + ITEM_FIELDS)}")
    for field in ("ts", "item_id"):
        if field not in cols:
            raise MappingError(f"{where}: columns.{field} is required")
    if "event_type" not in cols and not mapping.get("event_type"):
        raise MappingError(f"{where}: give columns.event_type or a constant `event_type:`")
    const = mapping.get("event_type")
    if const and const not in EVENT_TYPES:
        raise MappingError(f"{where}: event_type {const!r} is not one of {list(EVENT_TYPES)}")
    types = mapping.get("event_types") or {}
    if not isinstance(types, dict):
        raise MappingError(f"{where}: event_types must map source values to canonical event types")
    wrong = {k: v for k, v in types.items() if v not in EVENT_TYPES}
    if wrong:
        raise MappingError(f"{where}: event_types: {wrong} not in {list(EVENT_TYPES)}")
    fmt = mapping.get("format")
    if fmt and fmt not in FORMATS:
        raise MappingError(f"{where}: format {fmt!r} is not one of {list(FORMATS)}")
    out = dict(mapping)
    out["_where"] = where
    return out


def _format(path: Path, mapping: dict) -> str:
    if mapping.get("format"):
        return mapping["format"]
    name = path.name.lower()
    for suffix in (".gz", ".zip"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    if name.endswith(".jsonl") or name.endswith(".ndjson") or name.endswith(".json"):
        return "jsonl"
    return "csv"


def _read(path: Path, mapping: dict, required: list[str]) -> tuple[pd.DataFrame, Any, np.ndarray, np.ndarray]:
    """(raw frame, raw_json function, pre-flag reasons, pre-flag fields)."""
    fmt = _format(path, mapping)
    if fmt == "csv":
        rec: CsvRecords = read_csv_records(path, delimiter=str(mapping.get("delimiter") or ","),
                                           encoding=str(mapping.get("encoding") or "utf-8"), required=required)
        return rec.frame, rec.raw_json, rec.reason, rec.field
    if fmt == "jsonl":
        jr = read_json_lines(path, encoding=str(mapping.get("encoding") or "utf-8"))
        frame = pd.DataFrame([r if r is not None else {} for r in jr.records])
        if frame.empty and not len(jr.records):
            raise SourceError(f"{path}: no records")
        for c in required:
            if c not in frame.columns:
                frame[c] = None
        present = set().union(*(r.keys() for r in jr.records if r is not None)) if any(
            r is not None for r in jr.records) else set()
        require_columns(sorted(present), required, path)
        return frame, jr.raw_json, jr.reason, jr.field
    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError:
        raise SourceError(f"{path}: file not found") from None
    except Exception as exc:
        raise SourceError(f"{path}: not a readable Parquet file ({exc})") from exc
    require_columns(frame, required, path)
    if frame.empty:
        raise SourceError(f"{path}: no data rows")
    frame = frame.reset_index(drop=True)
    n = len(frame)

    def raw_json(idx: np.ndarray) -> list[str]:
        return [to_json(r) for r in frame.iloc[np.asarray(idx, dtype="int64")].to_dict(orient="records")]

    return frame, raw_json, np.full(n, None, dtype=object), np.full(n, None, dtype=object)


def load(path: str | Path, *, mapping: str | Path | dict | None = None, limits: Limits | None = None,
         earliest_ts: str | None = None, latest_ts: pd.Timestamp | None = None, **_: object) -> AdapterResult:
    if mapping is None:
        raise MappingError("the generic adapter needs a mapping (source.mapping / --mapping FILE.yaml)")
    path = Path(path)
    m = read_mapping(mapping)
    limits = resolve_limits(limits, earliest_ts, latest_ts)
    cols: dict = m["columns"]
    source = str(m.get("source") or NAME)
    required = [cols[f] for f in ("ts", "event_type", "item_id") if f in cols]
    raw, raw_json, pre_reason, pre_field = _read(path, m, required)
    n = len(raw)
    junk = [str(v) for v in (m.get("junk_values") or [])]

    def text(field: str) -> pd.Series:
        if field not in cols or cols[field] not in raw.columns:
            return pd.Series([None] * n, dtype=object)
        return null_strings(raw[cols[field]].astype(object).where(raw[cols[field]].notna(), None), junk)

    def number(field: str) -> tuple[pd.Series, pd.Series]:
        if field not in cols or cols[field] not in raw.columns:
            return pd.Series(np.nan, index=range(n)), pd.Series(False, index=range(n))
        col = raw[cols[field]]
        if col.dtype == object:
            col = null_strings(col, junk)
        return to_number(col)

    ts_col = raw[cols["ts"]]
    if pd.api.types.is_datetime64_any_dtype(ts_col.dtype):
        ts = pd.to_datetime(ts_col)
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None) if ts.dt.tz is not None else ts
    else:
        ts = parse_timestamps(ts_col.astype(object).where(ts_col.notna(), None),
                              tz=str(m.get("timezone") or "UTC"), fmt=m.get("timestamp_format"),
                              unit=m.get("timestamp_unit"))

    if "event_type" in cols:
        source_type = text("event_type")
        types = {str(k): v for k, v in (m.get("event_types") or {}).items()}
        event_type = source_type.map(lambda v: types.get(v, v if v in EVENT_TYPES else None) if v else None)
    else:
        event_type = pd.Series([m["event_type"]] * n, dtype=object)
    user = text("user_id")
    anon = [str(v) for v in (m.get("anonymous_users") or [])]
    if anon:
        user = user.where(~user.isin(anon), None)
    price, price_bad = number("price")
    price = price * float(m.get("price_scale") or 1.0)
    quantity, qty_bad = number("quantity")
    rating, rating_bad = number("rating")
    frame = events_frame(n, user_id=user, session_id=text("session_id"), ts=ts, event_type=event_type.astype(object),
                         item_id=text("item_id"), query=text("query"), quantity=quantity, price=price,
                         rating=rating, review_text=text("review_text"))

    flags = Flags(n)
    flags.reason[:] = pre_reason
    flags.field[:] = pre_field
    flags.flag(duplicate_mask(raw, valid=~flags.bad), "duplicate_row")
    flags.flag(price_bad, "invalid_value", cols.get("price"))
    flags.flag(qty_bad, "invalid_value", cols.get("quantity"))
    flags.flag(rating_bad, "invalid_value", cols.get("rating"))
    flags.standard(frame, limits, ts_field=cols["ts"], type_field=cols.get("event_type", "event_type"),
                   item_field=cols["item_id"], price_field=cols.get("price", "price"),
                   quantity_field=cols.get("quantity", "quantity"), rating_field=cols.get("rating", "rating"))

    kept = ~flags.bad
    sep = m.get("category_separator")
    category = text("category_path")
    if sep:
        category = category.map(lambda v: "/".join(p.strip() for p in v.split(sep) if p.strip()) or None
                                if isinstance(v, str) else None)
    attrs = {"title": text("title"), "category_path": category, "brand": text("brand"),
             "description": text("description"), "image_url": text("image_url")}
    items = items_from_events(frame.loc[kept], **{k: v[kept].to_numpy() for k, v in attrs.items()})
    return assemble(frame, flags, raw_json, items, source=source, source_file=path.name,
                    rows=np.arange(n, dtype="int64"), rows_in=n, repairs={}, limits=limits)
