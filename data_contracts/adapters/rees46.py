"""REES46 / Open CDP "eCommerce behavior data from multi category store" -> canonical tables.

Input: CSV (optionally gzipped) with columns `event_time, event_type, product_id, category_id,
category_code, brand, price, user_id, user_session` (the monthly `2019-Oct.csv` ... files, or the heads
in `rees46_ecommerce_sample/`).

Mapping decisions:
- `event_type` view / cart / remove_from_cart / purchase map to the canonical types of the same name;
- `event_time` carries ` UTC`; user = `user_id`, session = `user_session`, item = `product_id`;
- category: `category_code` is a dot taxonomy (`electronics.smartphone`) -> `electronics/smartphone`;
  empty means unknown (null), never a category;
- brand: lower case as recorded; empty -> null;
- REES46 records no product names: `title` stays null and the item is embedded from its category and
  brand (see ml/embeddings.item_text);
- price 0 = not recorded: null, counted as a repair; quantity is not recorded (null);
- exact duplicate rows are `duplicate_row` (5 in the 2019-Oct head).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from data_contracts.adapters.base import (AdapterResult, Flags, Limits, assemble, duplicate_mask, events_frame,
                                          items_from_events, null_strings, parse_timestamps, read_csv_records,
                                          resolve_limits, to_number)

NAME = "rees46_events"
REQUIRED = ["event_time", "event_type", "product_id", "price", "user_id", "user_session"]
ACTIONS = {"view": "view", "cart": "cart", "remove_from_cart": "remove_from_cart", "purchase": "purchase"}


def load(path: str | Path, *, limits: Limits | None = None, earliest_ts: str | None = None,
         latest_ts: pd.Timestamp | None = None, **_: object) -> AdapterResult:
    path = Path(path)
    limits = resolve_limits(limits, earliest_ts, latest_ts)
    rec = read_csv_records(path, required=REQUIRED)
    raw = rec.frame
    n = len(raw)

    action = null_strings(raw["event_type"])
    price, price_bad = to_number(raw["price"])
    frame = events_frame(
        n, user_id=null_strings(raw["user_id"]), session_id=null_strings(raw["user_session"]),
        ts=parse_timestamps(raw["event_time"]), event_type=action.map(ACTIONS).astype(object),
        item_id=null_strings(raw["product_id"]), price=price)

    flags = Flags(n)
    flags.reason[:] = rec.reason
    flags.field[:] = rec.field
    flags.flag(duplicate_mask(raw, valid=~flags.bad), "duplicate_row")
    flags.flag(price_bad, "invalid_value", "price")
    flags.standard(frame, limits, ts_field="event_time", type_field="event_type", item_field="product_id",
                   price_field="price")

    kept = ~flags.bad
    category = raw["category_code"] if "category_code" in raw else pd.Series([None] * n)
    brand = raw["brand"] if "brand" in raw else pd.Series([None] * n)
    category = null_strings(category).map(lambda v: v.replace(".", "/") if isinstance(v, str) else None)
    items = items_from_events(frame.loc[kept], category_path=category[kept].to_numpy(),
                              brand=null_strings(brand)[kept].to_numpy())
    return assemble(frame, flags, rec.raw_json, items, source=NAME, source_file=path.name,
                    rows=np.arange(n, dtype="int64"), rows_in=n, repairs={}, limits=limits)
