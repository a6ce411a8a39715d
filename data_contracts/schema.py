"""The canonical raw schema every adapter produces and dbt starts from.

Adapters (one per source format) map a shop's log into these two tables plus a quarantine table.
Everything downstream (dbt staging, checks, ML) relies only on what is declared here, so a new
source format needs a new adapter and nothing else.
"""

from __future__ import annotations

import pyarrow as pa

EVENT_TYPES: tuple[str, ...] = (
    "search", "view", "click", "cart", "remove_from_cart", "checkout", "purchase", "return", "review",
)

# Event types that refer to one item; `search` may have none (the query is the payload).
ITEM_EVENT_TYPES = frozenset(EVENT_TYPES) - {"search"}

EVENTS_SCHEMA = pa.schema([
    pa.field("event_id", pa.string(), nullable=False,
             metadata={"doc": "Stable id: hash of (source, source_file, source_row). Primary key."}),
    pa.field("user_id", pa.string(),
             metadata={"doc": "Shop's user/visitor id; null = anonymous (counts for item statistics only)."}),
    pa.field("session_id", pa.string(), metadata={"doc": "Source's session id; null if the source has none."}),
    pa.field("ts", pa.timestamp("us"), nullable=False, metadata={"doc": "Event time, UTC, naive."}),
    pa.field("event_type", pa.string(), nullable=False, metadata={"doc": f"One of {EVENT_TYPES}."}),
    pa.field("item_id", pa.string(), metadata={"doc": "Item (sellable product) id; null only for search."}),
    pa.field("query", pa.string(), metadata={"doc": "Search text for search events, else null."}),
    pa.field("quantity", pa.float64(), metadata={"doc": "Units (cart/purchase/return), null if unknown."}),
    pa.field("price", pa.float64(), metadata={"doc": "Unit price in the shop's currency, null if unknown."}),
    pa.field("rating", pa.float64(), metadata={"doc": "Review rating (1-5) for review events."}),
    pa.field("review_text", pa.string(), metadata={"doc": "Review body for review events."}),
    pa.field("source", pa.string(), nullable=False, metadata={"doc": "Adapter name that produced the row."}),
    pa.field("source_file", pa.string(), nullable=False, metadata={"doc": "File the row came from (basename)."}),
    pa.field("source_row", pa.int64(), nullable=False, metadata={"doc": "0-based row number in source_file."}),
])

ITEMS_SCHEMA = pa.schema([
    pa.field("item_id", pa.string(), nullable=False, metadata={"doc": "Primary key; matches events.item_id."}),
    pa.field("title", pa.string(), metadata={"doc": "Product title (the main text for embeddings)."}),
    pa.field("description", pa.string(), metadata={"doc": "Longer product text, null if none."}),
    pa.field("category_path", pa.string(),
             metadata={"doc": "'/'-separated path, root first, e.g. 'Apparel/Men's/T-Shirts'; null if unknown."}),
    pa.field("brand", pa.string(), metadata={"doc": "Brand, null if unknown."}),
    pa.field("price", pa.float64(), metadata={"doc": "Typical (median) unit price, null if unknown."}),
    pa.field("image_url", pa.string(), metadata={"doc": "Image URL, null if none."}),
])

QUARANTINE_SCHEMA = pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("source_row", pa.int64(), nullable=False),
    pa.field("reason", pa.string(), nullable=False, metadata={"doc": "Reason code, see REASONS."}),
    pa.field("field", pa.string(), metadata={"doc": "The offending field, when one is to blame."}),
    pa.field("raw", pa.string(), metadata={"doc": "The source row as JSON, for inspection and replay."}),
])

REASONS: dict[str, str] = {
    "missing_timestamp": "the event has no parsable time",
    "unknown_event_type": "the source action does not map to a canonical event type",
    "missing_item_id": "an item event without an item id",
    "negative_price": "price below zero",
    "nonpositive_quantity": "quantity zero or below on an event that moves units",
    "duplicate_row": "an exact copy of an earlier source row (the first copy is kept)",
    "ts_out_of_range": "timestamp before the earliest plausible time or too far in the future",
    "duplicate_event": "the same event (user, item, time, content) as an earlier row; the rows differ only in "
                       "fields the canonical schema does not keep (the first copy is kept)",
    "invalid_value": "a field holds a value of the wrong type (e.g. text in a numeric column)",
    "invalid_rating": "a review rating outside 1-5",
    "malformed_line": "a CSV/JSON line that cannot be parsed (wrong number of fields, broken quoting or JSON)",
    "invalid_encoding": "a line that is not valid UTF-8 (or the configured encoding)",
    "non_product_line": "a line that is not about a product (postage, fees, discounts, manual adjustments)",
    "missing_title": "a catalog item without a title",
    "duplicate_item": "a catalog item whose id already appeared earlier in the file (the first is kept)",
}

# Repairs: a field fixed in place, the row kept; counted per code in AdapterResult.repairs.
REPAIRS: dict[str, str] = {
    "zero_price_to_null": "price 0 means 'not recorded': set to null",
    "truncated_<field>": "text longer than quality.max_text_lengths.<field>: cut to the limit",
    "pii_email_masked": "an e-mail address in free text replaced by [email]",
    "pii_phone_masked": "a phone number in free text replaced by [phone]",
    "pii_masked_in_quarantine": "a quarantined row's raw record held an e-mail or phone number: masked the same way",
    "negative_quantity_to_return": "a cancellation line's negative quantity stored as a positive return quantity",
}


def field_docs(schema: pa.Schema) -> list[tuple[str, str, bool, str]]:
    """(name, arrow type, nullable, doc) per field, for docs and error messages."""
    return [(f.name, str(f.type), f.nullable, (f.metadata or {}).get(b"doc", b"").decode()) for f in schema]


class ContractError(ValueError):
    """A table does not match the canonical schema; the message names table and field."""


def conform(table: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    """Select and cast `table` to `schema`, failing with the table and field named."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ContractError(f"{name}: missing required column(s) {missing}")
    cols = []
    for field in schema:
        col = table.column(field.name)
        try:
            col = col.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ContractError(f"{name}.{field.name}: cannot cast {col.type} to {field.type}: {exc}") from exc
        if not field.nullable and col.null_count:
            raise ContractError(f"{name}.{field.name}: {col.null_count} null value(s) in a non-null field")
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)
