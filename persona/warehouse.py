"""The DuckDB warehouse: one file, short-lived connections (dbt writes the same file between steps)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
import pandas as pd
import pyarrow as pa


@contextmanager
def connect(path: str | Path, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        raise FileNotFoundError(f"warehouse {path} does not exist yet: run `persona run` first")
    con = duckdb.connect(str(path), read_only=read_only)
    try:
        yield con
    finally:
        con.close()


def replace_tables(path: str | Path, tables: dict[str, pa.Table | pd.DataFrame]) -> None:
    """Replace several tables in one transaction: readers see all old or all new, never a mix."""
    with connect(path) as con:
        con.begin()
        try:
            for name, table in tables.items():
                con.register("_incoming", table)
                con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM _incoming')
                con.unregister("_incoming")
            con.commit()
        except Exception:
            con.rollback()
            raise


def read_df(path: str | Path, sql: str, params: list | None = None) -> pd.DataFrame:
    with connect(path, read_only=True) as con:
        return con.execute(sql, params or []).df()


def table_exists(path: str | Path, name: str) -> bool:
    if not Path(path).exists():
        return False
    with connect(path, read_only=True) as con:
        return bool(con.execute(
            "select count(*) from information_schema.tables where table_name = ?", [name]).fetchone()[0])
