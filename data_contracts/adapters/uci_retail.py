"""UCI Online Retail (I) invoice lines -> canonical tables.

Input: CSV (optionally gzipped) with columns `InvoiceNo, StockCode, Description, Quantity, InvoiceDate,
UnitPrice, CustomerID, Country`, one row per invoice line (`online_retail.csv.gz`, 541,909 lines).

Mapping decisions:
- an invoice line is a `purchase`; a cancellation invoice (`C` prefix, negative quantity) is a `return`
  with the quantity made positive (counted as the repair `negative_quantity_to_return`);
- user = `CustomerID` without its float suffix (`17850.0` -> `17850`); **a line without a customer is an
  anonymous event** (user_id null), accepted: it still counts for item popularity and co-purchase;
- session = `InvoiceNo` (one basket);
- time: `InvoiceDate` is UK local time without zone; it is converted from `Europe/London` to UTC
  (option `timezone`);
- item = `StockCode` (upper-cased, so `85123a` and `85123A` are one item); title = its most frequent
  `Description`; price = median positive `UnitPrice`; UCI has no categories or brands;
- lines that are not about a product (postage, carriage, fees, discounts, manual adjustments, bad debt:
  `POST`, `DOT`, `C2`, `M`, `D`, `S`, `B`, `BANK CHARGES`, `AMAZONFEE`, `CRUK`, `gift_0001_*` vouchers)
  are quarantined as `non_product_line`;
- `UnitPrice` 0 = not recorded: null, counted as a repair; a negative price is quarantined;
- a non-cancellation line with quantity <= 0 (stock write-offs, 1,336 lines) is `nonpositive_quantity`;
- exact duplicate lines (5,268) are `duplicate_row`, the first copy kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from data_contracts.adapters.base import (AdapterResult, Flags, Limits, as_arrow_str, assemble, duplicate_mask,
                                          events_frame, from_arrow_str,
                                          items_from_events, null_strings, parse_timestamps, read_csv_records,
                                          resolve_limits, to_number)

NAME = "uci_online_retail"
REQUIRED = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"]
NON_PRODUCT_CODES = frozenset({"POST", "DOT", "C2", "M", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK"})
NON_PRODUCT_PREFIX = "GIFT_0001_"


def load(path: str | Path, *, limits: Limits | None = None, timezone: str = "Europe/London",
         earliest_ts: str | None = None, latest_ts: pd.Timestamp | None = None, **_: object) -> AdapterResult:
    path = Path(path)
    limits = resolve_limits(limits, earliest_ts, latest_ts)
    rec = read_csv_records(path, required=REQUIRED)
    raw = rec.frame
    n = len(raw)

    invoice = null_strings(raw["InvoiceNo"])
    code_a = pc.utf8_upper(as_arrow_str(null_strings(raw["StockCode"])))
    code = from_arrow_str(code_a)
    qty, qty_bad = to_number(raw["Quantity"])
    price, price_bad = to_number(raw["UnitPrice"])
    customer = from_arrow_str(pc.replace_substring_regex(as_arrow_str(null_strings(raw["CustomerID"])),
                                                         r"\.0$", ""))
    cancel = pc.fill_null(pc.starts_with(pc.utf8_upper(as_arrow_str(invoice)), "C"), False).to_numpy(
        zero_copy_only=False)
    event_type = np.where(cancel, "return", "purchase").astype(object)
    event_type[invoice.isna().to_numpy()] = None
    ts = parse_timestamps(raw["InvoiceDate"], tz=timezone)
    frame = events_frame(n, user_id=customer, session_id=invoice, ts=ts, event_type=event_type, item_id=code,
                         quantity=np.where(cancel, -qty, qty), price=price)

    flags = Flags(n)
    flags.reason[:] = rec.reason
    flags.field[:] = rec.field
    flags.flag(duplicate_mask(raw, valid=~flags.bad), "duplicate_row")
    flags.flag(qty_bad, "invalid_value", "Quantity")
    flags.flag(price_bad, "invalid_value", "UnitPrice")
    gift = pc.fill_null(pc.starts_with(code_a, NON_PRODUCT_PREFIX), False).to_numpy(zero_copy_only=False)
    flags.flag(code.isin(NON_PRODUCT_CODES).to_numpy() | gift, "non_product_line", "StockCode")
    flags.flag(invoice.isna(), "unknown_event_type", "InvoiceNo")
    flags.standard(frame, limits, ts_field="InvoiceDate", type_field="InvoiceNo", item_field="StockCode",
                   price_field="UnitPrice", quantity_field="Quantity")

    kept = ~flags.bad
    repairs = {"negative_quantity_to_return": int((cancel & kept).sum())}
    items = items_from_events(frame.loc[kept], title=null_strings(raw.loc[kept, "Description"]))
    return assemble(frame, flags, rec.raw_json, items, source=NAME, source_file=path.name,
                    rows=np.arange(n, dtype="int64"), rows_in=n, repairs=repairs, limits=limits)

