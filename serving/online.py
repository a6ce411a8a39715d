"""Online state: events posted to the API change a user's features at once, and survive restarts.

Why an overlay and not a new snapshot: rebuilding the snapshot takes the whole pipeline, but one
user's state is a few arrays. `UserView` is a one-user look-alike of `ml.snapshot.Snapshot` (the
item side is the model version's, shared; the user side holds this user's history merged with
the posted events), so candidates and features still come from `ml.candidates` / `ml.features`
unchanged. Users without posted events are served from the snapshot itself: offline parity holds.

Online events are placed at the snapshot's clock (age 0 days: "just now" for the model), in one
new session per `session_id`. Two quantities the snapshot keeps only as shares or means are
updated with an approximation: category/brand affinities (the base total weight is taken as the
sum of the positive per-item interaction scores) and the average price (the base mean is weighted
by the base event count). The profile vector is recomputed exactly as `ml.profiles.user_vectors`
does, from the merged per-item scores.

`EventInbox` appends every accepted event as one canonical JSON line, flushed and fsynced before
the API answers, so the event survives a crash and the next training run can ingest the file.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ml.snapshot import ITEM_FEATURES, MISSING, NEVER_DAYS, UI_FEATURES, USER_FEATURES, Snapshot, _UI_TYPES

_COL = {name: n for n, name in enumerate(UI_FEATURES)}
_UF = {name: n for n, name in enumerate(USER_FEATURES)}
_PRICE = ITEM_FEATURES.index("it_price")


@dataclass(frozen=True)
class OnlineEvent:
    event_id: str
    user_id: str
    session_id: str
    ts: str            # ISO 8601 UTC, the server's receive time
    event_type: str
    item_id: str
    price: float | None
    source: str = "api"

    @property
    def timestamp(self) -> pd.Timestamp:
        return pd.Timestamp(self.ts).tz_localize(None) if pd.Timestamp(self.ts).tzinfo else pd.Timestamp(self.ts)


class EventInbox:
    """Append-only JSONL of posted events; each line is durable (fsync) before `append` returns."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, events: list[OnlineEvent]) -> None:
        """One write and one fsync for the whole batch."""
        text = "".join(json.dumps(asdict(e), separators=(",", ":")) + "\n" for e in events)
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    def read(self) -> list[OnlineEvent]:
        """Every complete line; a torn last line (crash mid-write) is skipped, not fatal."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(OnlineEvent(**json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                continue
        return out

    def writable(self) -> bool:
        return os.access(self.path if self.path.exists() else self.path.parent, os.W_OK)


class OnlineStore:
    """Posted events per user (all of them, in arrival order); thread-safe."""

    def __init__(self, events: list[OnlineEvent] = ()):
        self._lock = threading.Lock()
        self._by_user: dict[str, list[OnlineEvent]] = {}
        for e in events:
            self.add(e)

    def add(self, event: OnlineEvent) -> None:
        with self._lock:
            self._by_user.setdefault(event.user_id, []).append(event)

    def events(self, user_id: str, since: pd.Timestamp | None = None) -> list[OnlineEvent]:
        with self._lock:
            evs = list(self._by_user.get(user_id, ()))
        return [e for e in evs if since is None or e.timestamp >= since]

    def __len__(self) -> int:
        with self._lock:
            return sum(map(len, self._by_user.values()))


class UserView:
    """One user (index 0) over the base snapshot's item side; quacks like `Snapshot` for candidates/features."""

    def __init__(self, base: Snapshot, hist_item, hist_feat, user_feat, user_vec, aff: dict):
        self._base = base
        self.hist_item = hist_item
        self.hist_feat = hist_feat
        self.hist_ptr = np.array([0, len(hist_item)], dtype=np.int64)
        self.user_feat = user_feat[None, :]
        self.user_vec = user_vec[None, :]
        for name, (ids, w) in aff.items():
            setattr(self, f"{name}_ptr", np.array([0, len(ids)], dtype=np.int64))
            setattr(self, f"{name}_id", ids)
            setattr(self, f"{name}_w", w)

    def __getattr__(self, name):  # the item side: item_emb, item_feat, pop_order, neighbors, n_items, ...
        return getattr(self._base, name)

    def history(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        return self.hist_item, self.hist_feat


def user_view(snap: Snapshot, u: int | None, events: list[OnlineEvent], event_weights: dict,
              catalog_price: np.ndarray | None = None) -> UserView:
    """The user's state after `events` (known user: snapshot index u; new user: None)."""
    if u is not None:
        base_items, base_feat = snap.history(u)
        uf = snap.user_feat[u].astype(np.float64).copy()
    else:
        base_items, base_feat = np.zeros(0, np.int32), np.zeros((0, len(UI_FEATURES)), np.float32)
        uf = np.zeros(len(USER_FEATURES), dtype=np.float64)
        uf[_UF["u_avg_price"]] = MISSING
    hist = {int(i): f.astype(np.float64).copy() for i, f in zip(base_items, base_feat)}
    base_pos = {int(i): max(float(f[_COL["ui_score"]]), 0.0) for i, f in zip(base_items, base_feat)}
    for f in hist.values():
        f[_COL["ui_in_last_session"]] = 0.0  # the posted events form the user's newest session
    events = [e for e in events if e.item_id in snap.item_index]  # an item a newer catalog dropped is ignored
    if not events:
        return UserView(snap, base_items, base_feat, uf.astype(np.float32),
                        snap.user_vec[u] if u is not None else np.zeros(snap.item_emb.shape[1], np.float32),
                        {n: (getattr(snap, f"{n}_id")[getattr(snap, f"{n}_ptr")[u]:getattr(snap, f"{n}_ptr")[u + 1]],
                             getattr(snap, f"{n}_w")[getattr(snap, f"{n}_ptr")[u]:getattr(snap, f"{n}_ptr")[u + 1]])
                         if u is not None else (np.zeros(0, np.int32), np.zeros(0, np.float32))
                         for n in ("cat", "top", "brand")})
    last_session = events[-1].session_id
    add_pos: dict[int, float] = {}
    priced = []
    for e in events:
        i = snap.item_index[e.item_id]
        f = hist.get(i)
        if f is None:
            f = np.zeros(len(UI_FEATURES), dtype=np.float64)
            f[_COL["ui_days_since_last"]] = NEVER_DAYS
            hist[i] = f
        col = _UI_TYPES.get(e.event_type)
        if col is not None:
            f[_COL[col]] += 1
        w = float(event_weights.get(e.event_type, 0.0))
        f[_COL["ui_score"]] += w
        f[_COL["ui_days_since_last"]] = 0.0
        if e.session_id == last_session:
            f[_COL["ui_in_last_session"]] = 1.0
        add_pos[i] = add_pos.get(i, 0.0) + max(w, 0.0)
        price = e.price if e.price is not None else (float(catalog_price[i]) if catalog_price is not None else None)
        if price is not None and price > 0:
            priced.append(price)

    order = sorted(hist, key=lambda i: (hist[i][_COL["ui_days_since_last"]], i))
    hist_item = np.array(order, dtype=np.int32)
    hist_feat = np.array([hist[i] for i in order], dtype=np.float32).reshape(len(order), len(UI_FEATURES))

    n_base = uf[_UF["u_n_events"]]
    had_events = n_base > 0
    uf[_UF["u_n_events"]] += len(events)
    uf[_UF["u_n_items"]] = len(hist)
    uf[_UF["u_n_sessions"]] += len({e.session_id for e in events})
    uf[_UF["u_days_since_last"]] = 0.0
    if not had_events:
        uf[_UF["u_days_since_first"]] = 0.0
    uf[_UF["u_n_carts"]] += sum(e.event_type == "cart" for e in events)
    uf[_UF["u_n_purchases"]] += sum(e.event_type == "purchase" for e in events)
    if priced:
        avg = uf[_UF["u_avg_price"]]
        n_prev = n_base if avg > 0 else 0.0
        uf[_UF["u_avg_price"]] = (max(avg, 0.0) * n_prev + sum(priced)) / (n_prev + len(priced))

    aff = {}
    for name, codes in (("cat", snap.item_cat), ("top", snap.item_top), ("brand", snap.item_brand)):
        totals: dict[int, float] = {}
        if u is not None:
            ptr, ids, ws = getattr(snap, f"{name}_ptr"), getattr(snap, f"{name}_id"), getattr(snap, f"{name}_w")
            base_total = sum(p for i, p in base_pos.items() if codes[i] >= 0)
            for c, s in zip(ids[ptr[u]:ptr[u + 1]], ws[ptr[u]:ptr[u + 1]]):
                totals[int(c)] = float(s) * base_total
        for i, p in add_pos.items():
            if codes[i] >= 0:
                totals[int(codes[i])] = totals.get(int(codes[i]), 0.0) + p
        grand = sum(totals.values())
        keys = sorted(totals)
        aff[name] = (np.array(keys, dtype=np.int32),
                     np.array([totals[c] / grand if grand > 0 else 0.0 for c in keys], dtype=np.float32))

    emb = snap.item_emb[hist_item].astype(np.float64)
    scores = hist_feat[:, _COL["ui_score"]].astype(np.float64)
    weighted = scores @ emb if len(order) else np.zeros(snap.item_emb.shape[1])
    norm = np.linalg.norm(weighted)
    vec = weighted if scores.sum() > 0 and norm > 1e-9 else emb.sum(axis=0) if len(order) else weighted
    norm = np.linalg.norm(vec)
    vec = (vec / norm if norm > 1e-12 else np.zeros_like(vec)).astype(np.float32)
    return UserView(snap, hist_item, hist_feat, uf.astype(np.float32), vec, aff)


def catalog_prices(snap: Snapshot) -> np.ndarray:
    return snap.item_feat[:, _PRICE].astype(np.float64)
