"""Temporal split: windows defined by timestamps, so every run on the same data splits the same way.

    ... history ... | train labels (xN) | valid labels | test labels | end
                    ^train cutoffs      ^valid cutoff  ^test cutoff

For each window, inputs (profiles, statistics, candidates, features) use only events strictly
before the window's start, and targets are the target events inside it. Several training windows
can be stacked (each with its own as-of state) for more training groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Window:
    name: str
    start: pd.Timestamp  # = the as-of cutoff of its inputs
    end: pd.Timestamp

    def as_dict(self) -> dict:
        return {"name": self.name, "start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass(frozen=True)
class Split:
    train: tuple[Window, ...]
    valid: Window
    test: Window
    end: pd.Timestamp

    @property
    def training_cutoff(self) -> pd.Timestamp:
        """The last moment the evaluated model's inputs may see: the start of the test window."""
        return self.test.start

    def as_dict(self) -> dict:
        return {"train": [w.as_dict() for w in self.train], "valid": self.valid.as_dict(),
                "test": self.test.as_dict(), "end": self.end.isoformat()}


class SplitError(ValueError):
    pass


def make_split(ts_min: pd.Timestamp, ts_max: pd.Timestamp, test_days: float, valid_days: float,
               train_days: float, train_windows: int = 1, train_step_days: float | None = None) -> Split:
    """Windows counted back from the last event; fails clearly when the data span is too short.

    Training windows end `train_step_days` apart (default: `train_days`, i.e. back to back); a
    smaller step gives overlapping label windows and more training groups from the same history.
    """
    step = pd.Timedelta(days=train_step_days or train_days)
    end = pd.Timestamp(ts_max).floor("D") + pd.Timedelta(days=1)
    test = Window("test", end - pd.Timedelta(days=test_days), end)
    valid = Window("valid", test.start - pd.Timedelta(days=valid_days), test.start)
    train = []
    for i in range(train_windows):
        stop = valid.start - i * step
        train.append(Window(f"train{i}", stop - pd.Timedelta(days=train_days), stop))
    earliest = train[-1].start
    if earliest <= pd.Timestamp(ts_min):
        raise SplitError(
            f"data span {pd.Timestamp(ts_min)} .. {pd.Timestamp(ts_max)} is too short for "
            f"{train_windows}x{train_days} train + {valid_days} valid + {test_days} test days with history "
            f"before the first window; shorten split.*_days in persona.yaml")
    return Split(tuple(reversed(train)), valid, test, end)


def window_targets(events: pd.DataFrame, window: Window, target_types: list[str]) -> pd.DataFrame:
    """(user_id, item_id) pairs with a target event inside the window, identified users only."""
    m = ((events["ts"] >= window.start) & (events["ts"] < window.end)
         & events["event_type"].isin(target_types) & events["user_id"].notna() & events["item_id"].notna())
    return events.loc[m, ["user_id", "item_id"]].drop_duplicates().reset_index(drop=True)


def eligible_targets(events: pd.DataFrame, window: Window, target_types: list[str]) -> dict[str, set[str]]:
    """Users with a target in the window and at least one event before it -> their target items."""
    targets = window_targets(events, window, target_types)
    before = set(events.loc[(events["ts"] < window.start) & events["user_id"].notna(), "user_id"].unique())
    targets = targets[targets["user_id"].isin(before)]
    return {u: set(g["item_id"]) for u, g in targets.groupby("user_id", sort=True)}


def stable_sample(values: np.ndarray, fraction: float, salt: str = "persona") -> np.ndarray:
    """A reproducible hash-based subset (same ids kept whatever the order or machine)."""
    import hashlib
    keep = [int(hashlib.md5(f"{salt}|{v}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction for v in values]
    return np.asarray(keep, dtype=bool)
