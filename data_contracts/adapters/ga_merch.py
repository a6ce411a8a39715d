"""Google Analytics 360 (Google Merchandise Store) product events -> canonical tables.

Input: one row per (hit, product) e-commerce action, as in
`product_events_2016-08_2016-10.parquet` (columns `full_visitor_id`, `session_id`, `event_time`,
`event_type`, `product_sku`, `product_name`, `product_category`, `price_usd`, `quantity`, ...).

Mapping decisions (GA-specific, so they live here and nowhere else):
- actions: product_list_click -> click, product_detail_view -> view, add_to_cart -> cart,
  remove_from_cart -> remove_from_cart, checkout -> checkout, purchase -> purchase.
- user = `full_visitor_id` (GA's visitorId/userId are always null); session = `session_id`.
- SKUs and variants: Merchandise Store SKUs are `GGOE` + 4 letters + a 4-digit style number + an
  optional 2-digit size/variant code (`GGOEGAAX0104` is the style page, `GGOEGAAQ010415` its size M).
  An item is the style (`GGOE-0104`): a shopper views the style and buys a size, and both must count
  for the same product. SKUs of any other shape are items as they are.
- categories: `(not set)` and the template placeholder `${escCatTitle}` are missing values, not
  categories; the site root `Home/` is dropped (`Home/Apparel/Men's/` -> `Apparel/Men's`).
  An item's category is its most frequent valid one.
- brand: GA records none (`(not set)` on every row); it is taken from a `Shop by Brand/<X>`
  category or from a leading store brand word in the title (Google, YouTube, Android, Waze).
- price 0 means "not recorded" (93 rows): set to null and counted as a repair, not quarantined.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from data_contracts.adapters.base import (AdapterResult, Limits, SourceError, event_ids, finish,
                                          require_columns, resolve_limits, split_quarantine)

NAME = "ga_merch_product_events"
ACTIONS = {
    "product_list_click": "click",
    "product_detail_view": "view",
    "add_to_cart": "cart",
    "remove_from_cart": "remove_from_cart",
    "checkout": "checkout",
    "purchase": "purchase",
}
JUNK_CATEGORIES = {"(not set)", "${escCatTitle}", ""}
STORE_BRANDS = ("Google", "YouTube", "Android", "Waze")
REQUIRED = ["full_visitor_id", "session_id", "event_time", "event_type", "product_sku", "product_name",
            "product_category", "price_usd", "quantity"]
_SKU = re.compile(r"^GGOE[A-Z]{4}(\d{4})(\d{2})?$")


def item_id_for_sku(sku: str | None) -> str | None:
    if sku is None or (isinstance(sku, float) and np.isnan(sku)):
        return None
    sku = str(sku).strip()
    if not sku:
        return None
    m = _SKU.match(sku)
    return f"GGOE-{m.group(1)}" if m else sku


def clean_category(value: str | None) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    value = str(value).strip()
    if value in JUNK_CATEGORIES or "${" in value:
        return None
    parts = [p.strip() for p in value.strip("/").split("/") if p.strip()]
    if parts and parts[0] == "Home":
        parts = parts[1:]
    return "/".join(parts) or None


def infer_brand(title: str | None, category: str | None) -> str | None:
    if category:
        parts = category.split("/")
        if "Shop by Brand" in parts:
            i = parts.index("Shop by Brand")
            if i + 1 < len(parts):
                return parts[i + 1]
    if title:
        first = str(title).split()[0] if str(title).split() else ""
        for brand in STORE_BRANDS:
            if first.lower() == brand.lower():
                return brand
    return None


def _mode(series: pd.Series):
    s = series.dropna()
    return s.value_counts().index[0] if len(s) else None


def load(path: str | Path, earliest_ts: str | None = None, latest_ts: pd.Timestamp | None = None, *,
         limits: Limits | None = None, **_: object) -> AdapterResult:
    path = Path(path)
    try:
        raw = pd.read_parquet(path)
    except FileNotFoundError as exc:
        raise SourceError(f"{path}: file not found") from exc
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise SourceError(f"{path}: not a readable Parquet file ({exc})") from exc
    require_columns(raw, REQUIRED, path)
    return map_product_events(raw, path.name, NAME, resolve_limits(limits, earliest_ts, latest_ts))


def map_product_events(raw: pd.DataFrame, source_file: str, source: str, limits: Limits) -> AdapterResult:
    """The GA mapping on a frame of (hit, product) rows; shared with the raw `ga_sessions_*` adapter."""
    raw = raw.reset_index(drop=True)
    n = len(raw)
    earliest_ts = limits.earliest_ts

    ts = pd.to_datetime(raw["event_time"], errors="coerce", utc=True).dt.tz_localize(None)
    event_type = raw["event_type"].map(ACTIONS)
    item_id = raw["product_sku"].map(item_id_for_sku)
    price = pd.to_numeric(raw["price_usd"], errors="coerce")
    quantity = pd.to_numeric(raw["quantity"], errors="coerce").astype("float64")
    user = raw["full_visitor_id"].astype("string").str.strip().replace("", pd.NA)

    frame = pd.DataFrame({
        "source_row": np.arange(n, dtype="int64"),
        "user_id": user.astype(object).where(user.notna(), None),
        "session_id": raw["session_id"].astype(object),
        "ts": ts,
        "event_type": event_type,
        "item_id": item_id,
        "price": price,
        "quantity": quantity,
    })

    latest = limits.latest_ts
    reason = pd.Series([None] * n, dtype=object)
    field = pd.Series([None] * n, dtype=object)

    def flag(mask: pd.Series, code: str, fld: str | None) -> None:
        m = mask.fillna(False).to_numpy() & reason.isna().to_numpy()
        reason[m] = code
        field[m] = fld

    flag(pd.Series(pd.util.hash_pandas_object(raw, index=False).duplicated(keep="first").to_numpy()), "duplicate_row", None)
    flag(ts.isna(), "missing_timestamp", "event_time")
    flag((ts < pd.Timestamp(earliest_ts)) | (ts > latest), "ts_out_of_range", "event_time")
    flag(event_type.isna(), "unknown_event_type", "event_type")
    flag(item_id.isna(), "missing_item_id", "product_sku")
    flag(price < 0, "negative_price", "price_usd")
    flag(event_type.isin(["cart", "purchase", "checkout", "remove_from_cart"]) & (quantity <= 0),
         "nonpositive_quantity", "quantity")

    kept, quarantine = split_quarantine(frame, reason, field, raw, source, source_file)

    repairs = {"zero_price_to_null": int((kept["price"] == 0).sum())}
    kept = kept.assign(price=kept["price"].where(kept["price"] != 0))
    events = kept.assign(
        event_id=event_ids(source, source_file, kept["source_row"].to_numpy()),
        query=None, rating=np.nan, review_text=None, source=source, source_file=source_file,
    )

    items = _items(raw.loc[kept.index], kept)
    return finish(events, items, quarantine, n, repairs, limits)


def _items(raw: pd.DataFrame, kept: pd.DataFrame) -> pd.DataFrame:
    df = pd.DataFrame({
        "item_id": kept["item_id"].to_numpy(),
        "title": raw["product_name"].astype(object).to_numpy(),
        "category_path": raw["product_category"].map(clean_category).to_numpy(),
        "price": kept["price"].where(kept["price"] > 0).to_numpy(),
    })
    df["brand"] = [infer_brand(t, c) for t, c in zip(df["title"], df["category_path"])]
    grouped = df.groupby("item_id", sort=True)
    items = pd.DataFrame({
        "title": grouped["title"].agg(_mode),
        "category_path": grouped["category_path"].agg(_mode),
        "price": grouped["price"].median(),
        "brand": grouped["brand"].agg(_mode),
    }).reset_index()
    items["description"] = None
    items["image_url"] = None
    return items
