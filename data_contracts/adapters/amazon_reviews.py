"""Amazon Review Data (2018) reviews (newline-delimited JSON, optionally gzipped) -> canonical tables.

Input: one JSON object per line with `overall` (rating 1-5), `reviewerID`, `asin`, `unixReviewTime`
(seconds; `reviewTime` "MM D, YYYY" as a fallback), `reviewText`, `summary`, `style`, ... as in
`AMAZON_FASHION_5.json.gz`.

Mapping decisions:
- every line is a `review` event: user = `reviewerID`, item = `asin`, rating = `overall`,
  review_text = `reviewText` (the `summary` when there is no text; 16 reviews have neither and are kept
  with a null text, their rating still counts); there are no sessions, prices or quantities;
- time = `unixReviewTime` (UTC midnight of the review day);
- duplicates: a line identical to an earlier one is `duplicate_row`; the same review (user, item, time,
  text) posted again for another size/colour variant (`style`) is `duplicate_event` - one opinion must
  not count several times. 68 + 21 = 89 in AMAZON_FASHION_5;
- items: only the ids (the metadata file with titles is not part of the review dump);
- e-mail addresses and phone numbers in review text are masked (see data_contracts/pii.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from data_contracts.adapters.base import (AdapterResult, Flags, Limits, SourceError, assemble, events_frame,
                                          items_from_events, null_strings, parse_timestamps, read_json_lines,
                                          resolve_limits, to_number)

NAME = "amazon_reviews"
REQUIRED = ["reviewerID", "asin", "overall"]


def load(path: str | Path, *, limits: Limits | None = None, earliest_ts: str | None = None,
         latest_ts: pd.Timestamp | None = None, **_: object) -> AdapterResult:
    path = Path(path)
    limits = resolve_limits(limits, earliest_ts, latest_ts)
    rec = read_json_lines(path)
    n = len(rec.records)
    good = [r for r in rec.records if r is not None]
    if not good and n:
        raise SourceError(f"{path}: no line is a readable JSON object (first bad line {int(rec.lines[0])})")
    keys = set().union(*(r.keys() for r in good)) if good else set()
    missing = [k for k in REQUIRED if k not in keys]
    if "unixReviewTime" not in keys and "reviewTime" not in keys:
        missing.append("unixReviewTime")
    if missing:
        raise SourceError(f"{path}: missing required field(s) {missing}; found {sorted(keys)}")

    raw = pd.DataFrame([r if r is not None else {} for r in rec.records], columns=sorted(keys) or None)

    def col(name: str) -> pd.Series:
        return raw[name] if name in raw else pd.Series([None] * n, dtype=object)

    ts = parse_timestamps(col("unixReviewTime"), unit="s")
    fallback = ts.isna() & col("reviewTime").notna()
    if fallback.any():
        ts[fallback] = pd.to_datetime(col("reviewTime")[fallback], format="%m %d, %Y", errors="coerce")
    rating, rating_bad = to_number(col("overall"))
    text = null_strings(col("reviewText"))
    text = text.where(text.notna(), null_strings(col("summary")))
    frame = events_frame(n, user_id=null_strings(col("reviewerID")), ts=ts,
                         event_type=np.full(n, "review", dtype=object), item_id=null_strings(col("asin")),
                         rating=rating, review_text=text)

    flags = Flags(n)
    flags.reason[:] = rec.reason
    flags.field[:] = rec.field
    valid = ~flags.bad
    exact = pd.Series([json.dumps(r, sort_keys=True) if r is not None else None for r in rec.records])
    flags.flag(valid & exact.duplicated(keep="first").to_numpy() & exact.notna().to_numpy(), "duplicate_row")
    key = frame[["user_id", "item_id", "ts", "review_text"]].astype(str).agg("\x1f".join, axis=1)
    ok = ~flags.bad
    flags.flag(ok & key.where(ok).duplicated(keep="first").to_numpy(), "duplicate_event")
    flags.flag(rating_bad, "invalid_value", "overall")
    flags.standard(frame, limits, ts_field="unixReviewTime", type_field="event_type", item_field="asin",
                   rating_field="overall")

    items = items_from_events(frame.loc[~flags.bad])
    return assemble(frame, flags, rec.raw_json, items, source=NAME, source_file=path.name,
                    rows=np.arange(n, dtype="int64"), rows_in=n, repairs={}, limits=limits)
