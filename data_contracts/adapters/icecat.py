"""Open Icecat product catalog (JSON array, optionally zipped, as packaged by Chorus) -> items only.

Input: `1.json.zip` ... `4.json.zip`, each one JSON array of products with `id`, `title`,
`short_description`, `supplier`, `price` (integer US cents), `img_500x500`, ... and thousands of sparse
`attr_*` columns (ignored). A catalog has no behaviour: the adapter yields `raw_items` rows and no events,
so it is a catalog source (`persona ingest`, or beside an event source), not a whole training source.

Mapping decisions:
- item = `id`; title = `title`; description = `short_description`; brand = `supplier`;
  image_url = `img_500x500` (else `img_high`); price = `price` / 100 (0 or missing -> null, a repair);
- Icecat has no category tree in this export (`attr_t_type` etc. are per-family attributes): null;
- quarantined: a product without an id (`missing_item_id`), without a title (`missing_title`), a repeated
  id (`duplicate_item`, first kept), a price that is not a number (`invalid_value`) or negative;
- overlong titles/descriptions are cut to `quality.max_text_lengths` and counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from data_contracts.adapters.base import (AdapterResult, Flags, Limits, SourceError, finish, null_strings,
                                          quarantine_table, read_json_lines, resolve_limits, to_number)
from data_contracts.schema import EVENTS_SCHEMA, ITEMS_SCHEMA

NAME = "icecat_products"
REQUIRED = ["id", "title"]


def load(path: str | Path, *, limits: Limits | None = None, earliest_ts: str | None = None,
         latest_ts: pd.Timestamp | None = None, **_: object) -> AdapterResult:
    path = Path(path)
    limits = resolve_limits(limits, earliest_ts, latest_ts)
    rec = read_json_lines(path)
    n = len(rec.records)
    keys: set = set()
    for r in rec.records[:1000]:
        if r is not None:
            keys.update(k for k in r if not k.startswith("attr_"))
    missing = [k for k in REQUIRED if k not in keys]
    if missing:
        raise SourceError(f"{path}: missing required field(s) {missing}; found {sorted(keys)}")
    wanted = ["id", "title", "short_description", "supplier", "price", "img_500x500", "img_high"]
    raw = pd.DataFrame([{k: r.get(k) for k in wanted} if r is not None else {} for r in rec.records],
                       columns=wanted)

    item_id = null_strings(raw["id"])
    title = null_strings(raw["title"])
    cents, price_bad = to_number(raw["price"])
    flags = Flags(n)
    flags.reason[:] = rec.reason
    flags.flag(item_id.isna(), "missing_item_id", "id")
    flags.flag(item_id.duplicated(keep="first") & item_id.notna(), "duplicate_item", "id")
    flags.flag(title.isna(), "missing_title", "title")
    flags.flag(price_bad, "invalid_value", "price")
    flags.flag(cents < 0, "negative_price", "price")

    kept = ~flags.bad
    price = cents / 100.0
    image = null_strings(raw["img_500x500"])
    image = image.where(image.notna(), null_strings(raw["img_high"]))
    items = pd.DataFrame({
        "item_id": item_id, "title": title, "description": null_strings(raw["short_description"]),
        "category_path": None, "brand": null_strings(raw["supplier"]), "price": price.where(price != 0),
        "image_url": image,
    })[kept][ITEMS_SCHEMA.names]
    repairs = {"zero_price_to_null": int(((cents == 0) & kept).sum())}
    idx = np.flatnonzero(~kept)
    quarantine = quarantine_table(NAME, path.name, idx, flags.reason[idx], flags.field[idx], rec.raw_json(idx))
    events = pd.DataFrame({c: pd.Series(dtype=object) for c in EVENTS_SCHEMA.names})
    return finish(events, items, quarantine, n, repairs, limits, unit="items")
