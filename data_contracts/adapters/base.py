"""What every adapter returns, and the shared rules for quarantine and lineage."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from data_contracts.schema import (EVENTS_SCHEMA, ITEMS_SCHEMA, QUARANTINE_SCHEMA, REASONS, conform)


class SourceError(ValueError):
    """A whole file is unusable (unreadable, missing a required column); names file and column."""


@dataclass
class AdapterResult:
    events: pa.Table
    items: pa.Table
    quarantine: pa.Table
    rows_in: int
    repairs: dict[str, int] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return self.events.num_rows

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
                "reasons": self.reasons(), "repairs": dict(self.repairs), "items": self.items.num_rows}


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


def finish(events: pd.DataFrame, items: pd.DataFrame, quarantine: pa.Table, rows_in: int,
           repairs: dict[str, int]) -> AdapterResult:
    events_t = conform(pa.Table.from_pandas(events, preserve_index=False), EVENTS_SCHEMA, "events")
    items_t = conform(pa.Table.from_pandas(items, preserve_index=False), ITEMS_SCHEMA, "items")
    result = AdapterResult(events_t, items_t, quarantine, rows_in, repairs)
    if result.accepted + result.quarantined != rows_in:
        raise AssertionError(f"reconciliation failed: {rows_in} in != {result.accepted} accepted "
                             f"+ {result.quarantined} quarantined")
    return result


def require_columns(df: pd.DataFrame, required: list[str], path: Path) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SourceError(f"{path}: missing required column(s) {missing}; found {list(df.columns)}")


Adapter = Callable[..., AdapterResult]
