"""Raw nested Google Analytics 360 export (`ga_sessions_YYYYMMDD`, one row per session) -> canonical tables.

Input: a BigQuery `ga_sessions_*` export as Parquet: one row per session (`fullVisitorId`, `visitId`,
`visitStartTime`, ...) with an array `hits`, each hit with `hitNumber`, `time` (ms since the session
start), `eCommerceAction.action_type` and an array `product` (`productSKU`, `v2ProductName`,
`v2ProductCategory`, `productPrice` in micro-units, `productQuantity`, `isImpression`, ...).
The daily files' nested types differ slightly (a field is all-null on some days), so each file is read
on its own.

Flattening (in DuckDB, only the needed fields, so a day's file takes a fraction of a second):
one row per (session, hit, product) whose product entry is *not* a list impression (impressions are
exposure, not behaviour: 3.35M rows in August 2016 against 182,530 actions).
`event_time` = visitStartTime + hit.time; `session_id` = `fullVisitorId-visitId`; the action code
1..6 becomes the GA action name (1 product_list_click, 2 product_detail_view, 3 add_to_cart,
4 remove_from_cart, 5 checkout, 6 purchase); 0 (no action) and 7/8 (refund, checkout option) stay
unmapped and are quarantined as `unknown_event_type`.

After flattening, the rows are exactly the `product_events` rows of the derived Merchandise Store file,
and the GA mapping of `ga_merch.py` applies (actions, SKU variants -> style items, junk categories,
brands, zero prices). `source_row` is the 0-based index of the flattened row within its daily file, in
(session, hit, product) order; the quarantine's `raw` holds the flattened row.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_contracts.adapters.base import AdapterResult, Limits, SourceError, resolve_limits
from data_contracts.adapters.ga_merch import map_product_events

NAME = "ga_sessions"
ACTION_NAMES = {"1": "product_list_click", "2": "product_detail_view", "3": "add_to_cart",
                "4": "remove_from_cart", "5": "checkout", "6": "purchase"}
REQUIRED = ["fullVisitorId", "visitId", "visitStartTime", "hits"]

_SQL = """
with s as (
    select row_number() over () as session_row, fullVisitorId, visitId, visitStartTime,
           list_transform(hits, lambda h: {
               hit_number: h.hitNumber, t: h."time", action: h.eCommerceAction.action_type,
               transaction_id: h."transaction".transactionId,
               products: list_filter(h.product, lambda p: not coalesce(p.isImpression, false))
           }) as hs
    from read_parquet(?)
),
h as (select session_row, fullVisitorId, visitId, visitStartTime, unnest(hs) as h from s),
p as (
    select session_row, fullVisitorId, visitId, visitStartTime, h.hit_number, h.t, h.action, h.transaction_id,
           generate_subscripts(h.products, 1) as product_pos, unnest(h.products) as p
    from h
)
select
    cast(fullVisitorId as varchar) as full_visitor_id,
    visitId as visit_id,
    cast(fullVisitorId as varchar) || '-' || cast(visitId as varchar) as session_id,
    to_timestamp(visitStartTime + coalesce(t, 0) / 1000.0) as event_time,
    hit_number,
    cast(action as varchar) as action_type,
    p.productSKU as product_sku,
    p.v2ProductName as product_name,
    p.v2ProductCategory as product_category,
    p.productBrand as product_brand,
    p.productVariant as product_variant,
    p.productPrice / 1e6 as price_usd,
    p.productQuantity as quantity,
    p.productRevenue / 1e6 as revenue_usd,
    p.isClick as is_click,
    transaction_id,
    p.productListName as product_list_name,
    p.productListPosition as product_list_position
from p
order by session_row, hit_number, product_pos
"""


def flatten(path: Path) -> pd.DataFrame:
    """One row per non-impression (session, hit, product) of one daily `ga_sessions_*` file."""
    import duckdb
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except FileNotFoundError:
        raise SourceError(f"{path}: file not found") from None
    except Exception as exc:
        raise SourceError(f"{path}: not a readable Parquet file ({exc})") from exc
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise SourceError(f"{path}: missing required column(s) {missing}; found {names}")
    con = duckdb.connect()
    try:
        con.execute("set enable_progress_bar = false")
        con.execute("set TimeZone = 'UTC'")
        try:
            df = con.execute(_SQL, [str(path)]).df()
        except duckdb.Error as exc:
            raise SourceError(f"{path}: nested GA fields missing or of another shape "
                              f"(hits[].product[], hits[].eCommerceAction): {exc}") from exc
    finally:
        con.close()
    df["event_type"] = df["action_type"].map(ACTION_NAMES).astype(object)
    df["event_time"] = pd.to_datetime(df["event_time"], utc=True)
    for col in ("price_usd", "quantity", "revenue_usd"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df


def load(path: str | Path, *, limits: Limits | None = None, earliest_ts: str | None = None,
         latest_ts: pd.Timestamp | None = None, **_: object) -> AdapterResult:
    path = Path(path)
    flat = flatten(path)
    return map_product_events(flat, path.name, NAME, resolve_limits(limits, earliest_ts, latest_ts))
