"""Small helpers the asset modules share: reading modelled tables and writing vector columns."""

import numpy as np
import pandas as pd
import pyarrow as pa

from orchestration.resources import Warehouse
from persona.config import Settings
from persona.warehouse import table_exists

EVENT_COLUMNS = "user_id, session_id, ts, event_type, item_id, price"
ITEM_COLUMNS = "item_id, title, category_path, brand, price"


def load_events(warehouse: Warehouse, settings: Settings) -> pd.DataFrame:
    """Modelled events (dbt `fct_events`) with item ids, in time order, plus the review rating and the review's
    text sentiment from the `review_sentiment` asset (null for other events, or before that asset has run)."""
    cols = ", ".join(f"e.{c.strip()}" for c in EVENT_COLUMNS.split(","))
    if table_exists(warehouse.resolve(settings), "review_sentiment"):
        sql = (f"select {cols}, e.rating, s.sentiment from fct_events e "
               "left join review_sentiment s on s.event_id = e.event_id")
    else:
        sql = f"select {cols}, e.rating, cast(null as double) as sentiment from fct_events e"
    df = warehouse.read(settings, f"{sql} where e.item_id is not null order by e.ts, e.event_id")
    df["ts"] = pd.to_datetime(df["ts"])
    return df


def load_items(warehouse: Warehouse, settings: Settings) -> pd.DataFrame:
    return warehouse.read(settings, f"select {ITEM_COLUMNS} from dim_items order by item_id")


def load_embeddings(warehouse: Warehouse, settings: Settings) -> tuple[list[str], np.ndarray]:
    df = warehouse.read(settings, "select item_id, embedding from item_embeddings order by item_id")
    if df.empty:
        raise ValueError("item_embeddings is empty: materialize item_embeddings first")
    return df["item_id"].astype(str).tolist(), np.vstack(df["embedding"].map(lambda v: np.asarray(v, np.float32)))


def vectors_column(vectors) -> pa.FixedSizeListArray:
    """float32 vectors -> Arrow fixed-size list (DuckDB FLOAT[n])."""
    m = np.ascontiguousarray(np.vstack([np.asarray(v, dtype=np.float32) for v in vectors]) if len(vectors) else
                             np.zeros((0, 1), np.float32))
    return pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1), type=pa.float32()), m.shape[1])


def with_vectors(df: pd.DataFrame, column: str) -> pa.Table:
    """Arrow table of `df` with `column` stored as FLOAT[n]."""
    base = pa.Table.from_pandas(df.drop(columns=[column]), preserve_index=False)
    return base.append_column(column, vectors_column(list(df[column])))


def md_table(df: pd.DataFrame, max_rows: int = 30, floatfmt: str = "{:.4f}") -> str:
    df = df.head(max_rows)
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "---|" * len(df.columns)
    rows = []
    for r in df.itertuples(index=False):
        rows.append("| " + " | ".join(floatfmt.format(v) if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join([head, sep, *rows])
