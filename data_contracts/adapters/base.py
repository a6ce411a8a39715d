"""What every adapter returns, and the shared rules for quarantine and lineage."""

from __future__ import annotations

import csv
import difflib
import gzip
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data_contracts.schema import (EVENT_TYPES, EVENTS_SCHEMA, ITEMS_SCHEMA, QUARANTINE_SCHEMA, REASONS,
                                   conform)

UNIT_EVENT_TYPES = ("cart", "remove_from_cart", "checkout", "purchase", "return")
DEFAULT_MAX_TEXT_LENGTHS = {"title": 500, "description": 5000, "query": 500, "review_text": 10000}


class SourceError(ValueError):
    """A whole file is unusable (unreadable, missing a required column); names file and column."""


@dataclass(frozen=True)
class Limits:
    """Row-level limits from `quality.*` in the settings (see persona/config.py)."""

    earliest_ts: pd.Timestamp = pd.Timestamp("2000-01-01")
    max_future_skew_hours: float = 24.0
    now: pd.Timestamp | None = None
    max_text_lengths: dict = field(default_factory=lambda: dict(DEFAULT_MAX_TEXT_LENGTHS))
    mask_pii: bool = True

    @classmethod
    def from_quality(cls, quality: dict | None, now: pd.Timestamp | None = None) -> "Limits":
        q = quality or {}
        lengths = dict(DEFAULT_MAX_TEXT_LENGTHS)
        lengths.update(q.get("max_text_lengths") or {})
        return cls(earliest_ts=pd.Timestamp(str(q.get("earliest_ts", "2000-01-01"))),
                   max_future_skew_hours=float(q.get("max_future_skew_hours", 24)), now=now,
                   max_text_lengths=lengths, mask_pii=bool(q.get("mask_pii", True)))

    @property
    def latest_ts(self) -> pd.Timestamp:
        now = self.now if self.now is not None else pd.Timestamp.now(tz="UTC").tz_localize(None)
        return pd.Timestamp(now) + pd.Timedelta(hours=self.max_future_skew_hours)


def resolve_limits(limits: Limits | None, earliest_ts: str | None = None,
                   latest_ts: pd.Timestamp | None = None) -> Limits:
    """`limits`, with the older keyword style (`earliest_ts=`, `latest_ts=`) applied on top."""
    from dataclasses import replace

    limits = limits or Limits()
    if earliest_ts is not None:
        limits = replace(limits, earliest_ts=pd.Timestamp(str(earliest_ts)))
    if latest_ts is not None:
        limits = replace(limits, now=pd.Timestamp(latest_ts), max_future_skew_hours=0.0)
    return limits


@dataclass
class AdapterResult:
    events: pa.Table
    items: pa.Table
    quarantine: pa.Table
    rows_in: int
    repairs: dict[str, int] = field(default_factory=dict)
    unit: str = "events"  # what a source row becomes: "events", or "items" for catalog-only sources
    file_rows: dict[str, int] = field(default_factory=dict)  # rows in per source file (set by load_source)
    id_fields: dict[str, str] = field(default_factory=dict)  # raw field -> "user"/"session"/"name" (privacy)
    pseudonymized: bool = False

    @property
    def accepted(self) -> int:
        return self.items.num_rows if self.unit == "items" else self.events.num_rows

    @property
    def quarantined(self) -> int:
        return self.quarantine.num_rows

    def reasons(self) -> dict[str, int]:
        if not self.quarantine.num_rows:
            return {}
        counts = self.quarantine.column("reason").value_counts().to_pylist()
        return {c["values"]: int(c["counts"]) for c in sorted(counts, key=lambda c: -c["counts"])}

    def summary(self) -> dict:
        return {"rows_in": self.rows_in, "accepted": self.accepted, "quarantined": self.quarantined,
                "reasons": self.reasons(), "repairs": dict(self.repairs), "items": self.items.num_rows,
                "events": self.events.num_rows, "unit": self.unit}


def event_ids(source: str, source_file: str, rows: np.ndarray) -> list[str]:
    """Deterministic ids, so reloading the same file yields the same keys."""
    prefix = f"{source}|{source_file}|"
    return [hashlib.blake2b((prefix + str(r)).encode(), digest_size=8).hexdigest() for r in rows]


def split_quarantine(frame: pd.DataFrame, reason: pd.Series, field_name: pd.Series, raw: pd.DataFrame,
                     source: str, source_file: str) -> tuple[pd.DataFrame, pa.Table]:
    """Rows with a reason go to quarantine (with the raw row as JSON); the rest are returned."""
    unknown = set(reason.dropna().unique()) - set(REASONS)
    if unknown:
        raise ValueError(f"undeclared quarantine reason(s): {sorted(unknown)}")
    bad = reason.notna().to_numpy()
    raw_bad = raw.loc[bad]
    quarantine = pd.DataFrame({
        "source": source,
        "source_file": source_file,
        "source_row": frame.loc[bad, "source_row"].astype("int64").to_numpy(),
        "reason": reason[bad].to_numpy(),
        "field": field_name[bad].to_numpy(),
        "raw": [json.dumps(r, default=str) for r in raw_bad.to_dict(orient="records")],
    })
    q_table = pa.Table.from_pandas(quarantine, preserve_index=False)
    return frame.loc[~bad], conform(q_table, QUARANTINE_SCHEMA, "quarantine")


def repair_text(frame: pd.DataFrame, fields: Iterable[str], limits: Limits | None,
                repairs: dict[str, int]) -> pd.DataFrame:
    """Mask PII in free text and cut overlong strings; each repair is counted, no row is dropped."""
    if limits is None or frame.empty:
        return frame
    from data_contracts.pii import FREE_TEXT_FIELDS, mask_series

    updates = {}
    for name in fields:
        if name not in frame.columns:
            continue
        col = frame[name]
        if limits.mask_pii and name in FREE_TEXT_FIELDS:
            col, n_email, n_phone = mask_series(col)
            if n_email:
                repairs["pii_email_masked"] = repairs.get("pii_email_masked", 0) + n_email
            if n_phone:
                repairs["pii_phone_masked"] = repairs.get("pii_phone_masked", 0) + n_phone
        limit = limits.max_text_lengths.get(name)
        if limit:
            lengths = pc.utf8_length(as_arrow_str(col)).fill_null(0).to_numpy(zero_copy_only=False)
            long = pd.Series(lengths > int(limit), index=col.index)
            if long.any():
                col = col.astype(object).copy()
                col[long] = [v[: int(limit)] for v in col[long]]
                key = f"truncated_{name}"
                repairs[key] = repairs.get(key, 0) + int(long.sum())
        if col is not frame[name]:
            updates[name] = col
    return frame.assign(**updates) if updates else frame


def mask_quarantine(quarantine: pa.Table, limits: Limits | None, repairs: dict[str, int]) -> pa.Table:
    """A rejected row keeps its raw record for the reader of the quarantine, but not the e-mail addresses and
    phone numbers in it: the whole record is masked (any of its fields may be free text), and the rows so
    masked are counted as `pii_masked_in_quarantine`. The masks' characters are JSON-safe."""
    if limits is None or not limits.mask_pii or quarantine.num_rows == 0 or "raw" not in quarantine.column_names:
        return quarantine
    from data_contracts.pii import mask_series

    raw = quarantine.column("raw").to_pandas()
    masked, n_email, n_phone = mask_series(raw)
    if not (n_email or n_phone):
        return quarantine
    changed = int((masked.astype(object) != raw.astype(object)).sum())
    repairs["pii_masked_in_quarantine"] = repairs.get("pii_masked_in_quarantine", 0) + changed
    i = quarantine.column_names.index("raw")
    return quarantine.set_column(i, quarantine.schema.field(i), pa.array(masked.tolist(), type=pa.string()))


def finish(events: pd.DataFrame, items: pd.DataFrame, quarantine: pa.Table, rows_in: int,
           repairs: dict[str, int], limits: Limits | None = None, unit: str = "events") -> AdapterResult:
    repairs = dict(repairs)
    events = repair_text(events, ("query", "review_text"), limits, repairs)
    items = repair_text(items, ("title", "description"), limits, repairs)
    quarantine = mask_quarantine(quarantine, limits, repairs)
    repairs = {k: v for k, v in repairs.items() if v}
    events_t = conform(pa.Table.from_pandas(events, preserve_index=False), EVENTS_SCHEMA, "events")
    items_t = conform(pa.Table.from_pandas(items, preserve_index=False), ITEMS_SCHEMA, "items")
    result = AdapterResult(events_t, items_t, quarantine, rows_in, repairs, unit)
    if result.accepted + result.quarantined != rows_in:
        raise AssertionError(f"reconciliation failed: {rows_in} in != {result.accepted} accepted "
                             f"+ {result.quarantined} quarantined")
    return result


def require_columns(df: pd.DataFrame | list[str], required: list[str], path: Path) -> None:
    found = list(df.columns) if hasattr(df, "columns") else list(df)
    missing = [c for c in required if c not in found]
    if missing:
        hints = []
        for c in missing:
            close = difflib.get_close_matches(c, [str(f) for f in found], n=1, cutoff=0.6)
            if close:
                hints.append(f"{c!r} (renamed to {close[0]!r}?)")
        hint = f"; did a column get renamed: {', '.join(hints)}" if hints else ""
        raise SourceError(f"{path}: missing required column(s) {missing}; found {found}{hint}")


# --------------------------------------------------------------------------------------------------
# Shared building blocks for the adapters
# --------------------------------------------------------------------------------------------------

class Flags:
    """Reason codes per row, first reason wins (adapters flag in order of precedence)."""

    def __init__(self, n: int):
        self.reason = np.full(n, None, dtype=object)
        self.field = np.full(n, None, dtype=object)

    def flag(self, mask, code: str, fld: str | None = None) -> None:
        if code not in REASONS:
            raise ValueError(f"undeclared quarantine reason {code!r}")
        m = np.asarray(pd.Series(mask).fillna(False).to_numpy(), dtype=bool) & pd.isna(self.reason)
        self.reason[m] = code
        self.field[m] = fld

    @property
    def bad(self) -> np.ndarray:
        return ~pd.isna(self.reason)

    def standard(self, frame: pd.DataFrame, limits: Limits, ts_field: str, type_field: str, item_field: str,
                 price_field: str | None = None, quantity_field: str | None = None,
                 rating_field: str | None = None) -> None:
        """The checks every event source shares, in this order: time, type, item, price, quantity, rating."""
        ts = frame["ts"]
        self.flag(ts.isna(), "missing_timestamp", ts_field)
        self.flag((ts < limits.earliest_ts) | (ts > limits.latest_ts), "ts_out_of_range", ts_field)
        self.flag(~frame["event_type"].isin(EVENT_TYPES), "unknown_event_type", type_field)
        self.flag((frame["event_type"] != "search") & frame["item_id"].isna(), "missing_item_id", item_field)
        if price_field:
            self.flag(frame["price"] < 0, "negative_price", price_field)
        if quantity_field:
            self.flag(frame["event_type"].isin(UNIT_EVENT_TYPES) & (frame["quantity"] <= 0),
                      "nonpositive_quantity", quantity_field)
        if rating_field:
            r = frame["rating"]
            self.flag(r.notna() & ((r < 1) | (r > 5)), "invalid_rating", rating_field)


def quarantine_table(source: str, source_file: str | pd.Series, rows: np.ndarray, reasons: np.ndarray,
                     fields: np.ndarray, raw_json: list[str]) -> pa.Table:
    q = pd.DataFrame({"source": source, "source_file": source_file, "source_row": np.asarray(rows, dtype="int64"),
                      "reason": reasons, "field": fields, "raw": raw_json})
    if q.empty:
        return QUARANTINE_SCHEMA.empty_table()
    return conform(pa.Table.from_pandas(q, preserve_index=False), QUARANTINE_SCHEMA, "quarantine")


def to_json(record: dict) -> str:
    return json.dumps(record, default=str, ensure_ascii=False)


def events_frame(n: int, **cols) -> pd.DataFrame:
    """A canonical events frame (every EVENTS_SCHEMA column except the ids), missing columns null."""
    out = {}
    for name in ("user_id", "session_id", "ts", "event_type", "item_id", "query", "quantity", "price", "rating",
                 "review_text"):
        v = cols.get(name)
        if v is None:
            v = np.full(n, np.nan) if name in ("quantity", "price", "rating") else np.full(n, None, dtype=object)
        out[name] = v.to_numpy() if isinstance(v, pd.Series) else v
    return pd.DataFrame(out)


def as_arrow_str(s: pd.Series | np.ndarray) -> pa.Array:
    """Object values (str / None / numbers) as an Arrow string array."""
    values = s.to_numpy(dtype=object) if isinstance(s, pd.Series) else np.asarray(s, dtype=object)
    try:
        return pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values],
                        type=pa.string())


def from_arrow_str(arr: pa.Array, index: pd.Index | None = None) -> pd.Series:
    out = pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object, index=index)
    return out.where(out.notna(), None)


def null_strings(s: pd.Series, junk: Iterable[str] = ()) -> pd.Series:
    """Strip strings; empty and junk placeholder values become None."""
    arr = pc.utf8_trim_whitespace(as_arrow_str(s))
    bad = pc.or_(pc.equal(arr, ""), pc.is_in(arr, value_set=pa.array(sorted(set(junk) | {""}), type=pa.string())))
    return from_arrow_str(pc.if_else(pc.fill_null(bad, False), pa.scalar(None, pa.string()), arr),
                          s.index if isinstance(s, pd.Series) else None)


def to_number(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(numbers, mask of values that were present but not numeric)."""
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.astype("float64"), pd.Series(False, index=s.index)
    arr = pc.utf8_trim_whitespace(as_arrow_str(s))
    present = pc.fill_null(pc.not_equal(arr, ""), False)
    ok = pc.fill_null(pc.match_substring_regex(arr, r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"), False)
    num = pc.cast(pc.if_else(ok, arr, pa.scalar(None, pa.string())), pa.float64())
    bad = pc.and_(present, pc.invert(ok))
    return (pd.Series(num.to_numpy(zero_copy_only=False), index=s.index, dtype="float64"),
            pd.Series(bad.to_numpy(zero_copy_only=False), index=s.index))


def assemble(frame: pd.DataFrame, flags: Flags, raw_json: Callable[[np.ndarray], list[str]], items: pd.DataFrame,
             *, source: str, source_file: str | np.ndarray, rows: np.ndarray, rows_in: int,
             repairs: dict[str, int], limits: Limits | None, zero_price_is_null: bool = True) -> AdapterResult:
    """Quarantine the flagged rows, repair the kept ones, add ids and lineage, conform, reconcile."""
    bad = flags.bad
    files = np.broadcast_to(np.asarray(source_file, dtype=object), (len(frame),))
    idx = np.flatnonzero(bad)
    quarantine = quarantine_table(source, files[idx], rows[idx], flags.reason[idx], flags.field[idx], raw_json(idx))
    kept = frame.loc[~bad].copy()
    kept_rows = rows[~bad]
    kept_files = files[~bad]
    if zero_price_is_null and "price" in kept:
        zero = kept["price"] == 0
        repairs["zero_price_to_null"] = repairs.get("zero_price_to_null", 0) + int(zero.sum())
        kept.loc[zero, "price"] = np.nan
    kept["source"] = source
    kept["source_file"] = kept_files
    kept["source_row"] = kept_rows.astype("int64")
    if len(set(kept_files)) <= 1:
        kept["event_id"] = event_ids(source, str(kept_files[0]) if len(kept_files) else "", kept_rows)
    else:
        kept["event_id"] = [hashlib.blake2b(f"{source}|{f}|{r}".encode(), digest_size=8).hexdigest()
                            for f, r in zip(kept_files, kept_rows)]
    return finish(kept, items, quarantine, rows_in, repairs, limits)


def empty_items() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c == "price" else object) for c in ITEMS_SCHEMA.names})


def mode(series: pd.Series):
    s = series.dropna()
    return s.value_counts().index[0] if len(s) else None


def group_mode(keys: pd.Series, values: pd.Series) -> pd.Series:
    """Most frequent non-null value per key (ties: the smallest value), vectorised."""
    df = pd.DataFrame({"k": np.asarray(keys, dtype=object), "v": np.asarray(values, dtype=object)}).dropna()
    if df.empty:
        return pd.Series(dtype=object)
    counts = df.groupby(["k", "v"], sort=True).size().reset_index(name="n")
    counts = counts.sort_values(["k", "n"], ascending=[True, False], kind="stable")
    return counts.drop_duplicates("k").set_index("k")["v"]


def items_from_events(kept: pd.DataFrame, **attrs: pd.Series) -> pd.DataFrame:
    """One row per item id of the kept events: most frequent title/category/brand, median positive price."""
    if kept.empty:
        return empty_items()
    df = pd.DataFrame({"item_id": kept["item_id"].to_numpy()})
    for name, values in attrs.items():
        df[name] = np.asarray(values, dtype=object)
    df["price"] = kept["price"].where(kept["price"] > 0).to_numpy()
    df = df[df["item_id"].notna()]
    g = df.groupby("item_id", sort=True)
    out = pd.DataFrame({"price": g["price"].median()})
    for name in attrs:
        out[name] = group_mode(df["item_id"], df[name]).reindex(out.index)
    out.index.name = "item_id"
    out = out.reset_index()
    for c in ITEMS_SCHEMA.names:
        if c not in out:
            out[c] = None
    return out[ITEMS_SCHEMA.names]


# --------------------------------------------------------------------------------------------------
# Reading files robustly: a bad line is a quarantined row, never a lost row or a traceback
# --------------------------------------------------------------------------------------------------

def open_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped / unzipped (first member) as needed; SourceError when unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise SourceError(f"{path}: is a directory, expected a file") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc})") from exc
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise SourceError(f"{path}: corrupt gzip file ({exc})") from exc
    elif data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                names = [n for n in z.namelist() if not n.endswith("/")]
                data = z.read(names[0]) if names else b""
        except zipfile.BadZipFile as exc:
            raise SourceError(f"{path}: corrupt zip file ({exc})") from exc
    elif path.suffix.lower() in (".gz", ".gzip", ".zip"):
        kind = "zip" if path.suffix.lower() == ".zip" else "gzip"
        raise SourceError(f"{path}: named like a {kind} file but is not one (its first bytes are not the {kind} "
                          "signature)")
    if not data.strip():
        raise SourceError(f"{path}: empty file (no header, no rows)")
    return data


def _swallowed_rows(lines: list[str], width: int, delimiter: str) -> bool:
    """Whether the continuation lines of a multi-line record are mostly complete rows on their own: the mark of a
    stray quote (a legitimate quoted newline continues a field with text, not with whole rows)."""
    whole = 0
    for line in lines:
        try:
            whole += len(next(csv.reader([line], delimiter=delimiter, strict=False), [])) == width
        except csv.Error:
            pass
    return whole * 2 >= len(lines)


class _Lines:
    """An iterator over a file's lines with a settable position (`pos` = lines handed out so far)."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        self.pos = 0

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        if self.pos >= len(self.lines):
            raise StopIteration
        self.pos += 1
        return self.lines[self.pos - 1]


@dataclass
class CsvRecords:
    """Rows of a CSV file as strings; malformed / undecodable rows flagged, never dropped."""

    header: list[str]
    frame: pd.DataFrame                 # one row per data record, every value a str or None
    lines: np.ndarray                   # 1-based line number where each record starts
    reason: np.ndarray                  # per record: None, "malformed_line" or "invalid_encoding"
    field: np.ndarray
    text: list[str | None]              # the raw record text for flagged records

    def raw_json(self, idx: np.ndarray) -> list[str]:
        records = self.frame.iloc[np.asarray(idx, dtype="int64")].to_dict(orient="records")
        out = []
        for i, rec in zip(idx, records):
            if self.reason[i] is not None:
                out.append(to_json({"_line": int(self.lines[i]), "_text": self.text[i]}))
            else:
                out.append(to_json(rec))
        return out


def read_csv_records(path: Path, *, delimiter: str = ",", encoding: str = "utf-8",
                     required: list[str] | None = None) -> CsvRecords:
    """Parse a (gzipped) CSV file with a header. File-level problems raise SourceError naming the file
    (and column); a line with the wrong number of fields or undecodable bytes is flagged per record."""
    data = open_bytes(path)
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    try:
        text = data.decode(encoding)
        clean = True
    except UnicodeDecodeError:
        text = data.decode(encoding, errors="surrogateescape")
        clean = False
    except LookupError:
        raise SourceError(f"{path}: unknown encoding {encoding!r}") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    try:
        header = next(reader)
    except StopIteration:
        raise SourceError(f"{path}: empty file (no header, no rows)") from None
    except csv.Error as exc:
        raise SourceError(f"{path}: unreadable CSV header ({exc})") from exc
    header = [h.strip() for h in header]
    if any(_has_surrogates(h) for h in header):
        raise SourceError(f"{path}: the header line is not valid {encoding}")
    if required:
        require_columns(header, required, path)
    if clean and len(set(header)) == len(header):
        fast = _fast_csv(text, header, delimiter)
        if fast is not None:
            return fast
    width = len(header)
    rows: list[list[str] | None] = []
    lines: list[int] = []
    reason: list[str | None] = []
    fields: list[str | None] = []
    texts: list[str | None] = []
    # physical lines as the csv module counts them, behind a cursor so parsing can resume after a broken record
    src = _Lines(list(io.StringIO(text, newline="")))
    line_no = reader.line_num + 1  # the header's lines are behind us

    def restart_at(line: int):
        """A fresh reader from 1-based physical line `line` on (no copy of the text: the cursor moves)."""
        src.pos = line - 1
        return csv.reader(src, delimiter=delimiter, strict=False)

    reader = restart_at(line_no)
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. NUL byte or a field larger than the csv module's limit
            rows.append(None)
            lines.append(line_no)
            reason.append("malformed_line")
            fields.append(None)
            texts.append(f"unparsable: {exc}")
            # only this line is rejected: parsing resumes on the next one, whatever the error swallowed
            reader = restart_at(line_no + 1)
            line_no += 1
            continue
        start, line_no = line_no, src.pos + 1
        if line_no - start > 1 and (len(rec) != width or _swallowed_rows(src.lines[start:line_no - 1], width,
                                                                         delimiter)):
            # a stray quote opened a field that ran over the following lines (to the end of the file, or to the
            # next quote): reject the line it started on and parse the lines it swallowed as records of their own
            rows.append(None)
            lines.append(start)
            reason.append("malformed_line")
            fields.append(None)
            texts.append(src.lines[start - 1].rstrip("\r\n"))
            reader = restart_at(start + 1)
            line_no = start + 1
            continue
        if not rec or (len(rec) == 1 and not rec[0].strip() and width > 1):
            continue  # blank line: not a record
        bad_field = "" if clean else next(
            (header[i] if i < width else None for i, v in enumerate(rec) if _has_surrogates(v)), "")
        if bad_field != "":
            rows.append(None)
            lines.append(start)
            reason.append("invalid_encoding")
            fields.append(bad_field)
            raw_bytes = delimiter.join(rec).encode(encoding, errors="surrogateescape")
            texts.append(raw_bytes.decode(encoding, errors="backslashreplace"))
        elif len(rec) != width:
            rows.append(None)
            lines.append(start)
            reason.append("malformed_line")
            fields.append(None)
            texts.append(delimiter.join(rec))
        else:
            rows.append(rec)
            lines.append(start)
            reason.append(None)
            fields.append(None)
            texts.append(None)
    if not rows:
        raise SourceError(f"{path}: header only, no data rows")
    good = [r if r is not None else [None] * width for r in rows]
    frame = pd.DataFrame(good, columns=header, dtype=object) if good else pd.DataFrame(columns=header, dtype=object)
    frame = frame.where(frame.notna(), None)
    return CsvRecords(header, frame, np.asarray(lines, dtype="int64"), np.asarray(reason, dtype=object),
                      np.asarray(fields, dtype=object), texts)


def _fast_csv(text: str, header: list[str], delimiter: str) -> CsvRecords | None:
    """pyarrow's CSV reader for the common case (valid text, every line well formed); None = use the
    careful line-by-line reader instead."""
    import pyarrow.csv as pacsv

    bad: list = []

    def on_invalid(row) -> str:
        bad.append(row)
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(text.encode("utf-8")),
            read_options=pacsv.ReadOptions(use_threads=False, column_names=header, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=False,
                                             invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                                 strings_can_be_null=True, null_values=[""]))
    except (pa.ArrowInvalid, ValueError):
        return None
    if bad:
        return None
    lines = text.count("\n", 0, len(text)) + (0 if text.endswith("\n") else 1) - 1
    if lines != table.num_rows or not table.num_rows:  # blank lines or quoted newlines: numbers would drift
        return None
    frame = table.to_pandas()
    frame = frame.astype(object).where(frame.notna(), None)
    n = table.num_rows
    return CsvRecords(header, frame, np.arange(2, n + 2, dtype="int64"), np.full(n, None, dtype=object),
                      np.full(n, None, dtype=object), [None] * n)


@dataclass
class JsonRecords:
    """Records of a newline-delimited JSON file; unparsable / undecodable lines flagged, never dropped."""

    records: list[dict | None]
    lines: np.ndarray
    reason: np.ndarray
    field: np.ndarray
    text: list[str | None]

    def raw_json(self, idx: np.ndarray) -> list[str]:
        return [to_json({"_line": int(self.lines[i]), "_text": self.text[i]}) if self.reason[i] is not None
                else to_json(self.records[i]) for i in idx]


def read_json_lines(path: Path, encoding: str = "utf-8") -> JsonRecords:
    """Newline-delimited JSON (optionally gzipped); a JSON array file is accepted too."""
    data = open_bytes(path)
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    if data.lstrip()[:1] == b"[":
        try:
            arr = json.loads(data.decode(encoding))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SourceError(f"{path}: not a readable JSON array ({exc})") from exc
        n = len(arr)
        recs = [r if isinstance(r, dict) else None for r in arr]
        reason = np.asarray([None if r is not None else "malformed_line" for r in recs], dtype=object)
        return JsonRecords(recs, np.arange(1, n + 1), reason, np.full(n, None, dtype=object),
                           [None if r is not None else json.dumps(a)[:2000] for r, a in zip(recs, arr)])
    records, lines, reason, texts = [], [], [], []
    for no, raw_line in enumerate(data.split(b"\n"), 1):
        if not raw_line.strip():
            continue
        try:
            line = raw_line.decode(encoding)
        except UnicodeDecodeError:
            records.append(None)
            lines.append(no)
            reason.append("invalid_encoding")
            texts.append(raw_line.decode(encoding, errors="backslashreplace")[:2000])
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            records.append(None)
            lines.append(no)
            reason.append("malformed_line")
            texts.append(line[:2000])
            continue
        records.append(rec)
        lines.append(no)
        reason.append(None)
        texts.append(None)
    n = len(records)
    return JsonRecords(records, np.asarray(lines, dtype="int64"), np.asarray(reason, dtype=object),
                       np.full(n, None, dtype=object), texts)


def _has_surrogates(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value) if value and not value.isascii() else False


def duplicate_mask(frame: pd.DataFrame, valid: np.ndarray | None = None) -> np.ndarray:
    """Exact copies of an earlier row (among the valid rows; the first copy is kept)."""
    if frame.empty:
        return np.zeros(0, dtype=bool)
    h = pd.Series(pd.util.hash_pandas_object(frame.fillna("\x00<null>"), index=False).to_numpy())
    if valid is None:
        return h.duplicated(keep="first").to_numpy()
    out = np.zeros(len(frame), dtype=bool)
    vi = np.flatnonzero(valid)
    out[vi] = h.iloc[vi].duplicated(keep="first").to_numpy()
    return out


def parse_timestamps(values: pd.Series, tz: str = "UTC", fmt: str | None = None,
                     unit: str | None = None) -> pd.Series:
    """Strings (or epoch numbers with `unit`) -> naive UTC timestamps; NaT where unparsable.

    Values that carry their own offset (`Z`, `+02:00`, ` UTC`) are converted from it; values without one
    are taken to be in `tz`. A file mixing both is fine.
    """
    if unit:
        num = pd.to_numeric(values, errors="coerce")
        return pd.to_datetime(num, unit=unit, errors="coerce", utc=True).dt.tz_localize(None)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    if not len(values):
        return out
    arr = pc.utf8_trim_whitespace(as_arrow_str(values))
    present = pc.fill_null(pc.not_equal(arr, ""), False)
    is_aware = pc.fill_null(pc.match_substring_regex(arr, r"(?:Z|[+-]\d{2}:?\d{2}|\sUTC|\sGMT)$"), False)
    text = from_arrow_str(arr, values.index)
    aware = pd.Series(pc.and_(present, is_aware).to_numpy(zero_copy_only=False), index=values.index)
    naive = pd.Series(pc.and_(present, pc.invert(is_aware)).to_numpy(zero_copy_only=False), index=values.index)
    if aware.any():
        t = text[aware].str.replace(r"\s(UTC|GMT)$", "+00:00", regex=True)
        parsed = pd.to_datetime(t, errors="coerce", utc=True, format=fmt or "ISO8601")
        if parsed.isna().any():  # non-ISO layouts with an offset
            retry = parsed.isna()
            parsed[retry] = pd.to_datetime(t[retry], errors="coerce", utc=True, format="mixed")
        out[aware] = parsed.dt.tz_localize(None).to_numpy()
    if naive.any():
        parsed = pd.to_datetime(text[naive], errors="coerce", format=fmt or "ISO8601")
        if fmt is None and parsed.isna().any():
            retry = parsed.isna()
            parsed[retry] = pd.to_datetime(text[naive][retry], errors="coerce", format="mixed")
        if tz and tz.upper() != "UTC":
            parsed = parsed.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        out[naive] = parsed.to_numpy()
    return out


Adapter = Callable[..., AdapterResult]
