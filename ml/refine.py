"""Profile refinement: a small two-tower model trained on behaviour, compared against the unrefined profile.

Unrefined (`ml.profiles.user_vectors`): user = decayed, event-weighted mean of item text embeddings,
retrieval by cosine. Refined: the same shape, with the weights learned from what users did next.

- Item tower: frozen text vectors (`item_tower="text"`) or the fused text ⊕ category/brand/price
  (⊕ image) projection of `ml.fusion` (`"fused"`), initialised to return the text vector.
- User tower over the user's last `max_history` events before the reference time: attention pooling
  whose logits are `type_bias[event type] - rate * age_days (+ q·item)`, initialised to log(event weight)
  and ln2 / half-life, so before training it reproduces the unrefined profile's weighting; then a
  projection initialised to identity. `user_tower="gru"` adds a GRU over the history (residual,
  zero-initialised).
- Examples: for every session of a user that contains target events, history = the user's events
  strictly before that session started, positives = the session's target items. This mirrors the
  evaluation (history before a cutoff, targets after it) instead of predicting the next click of
  the same session.
- Loss: InfoNCE over in-batch negatives with cosine / temperature, same-item collisions masked, and
  the log-popularity (logQ) correction so popular items are not over-penalised as negatives.

Everything sees only events strictly before the `as_of` passed in; the bench tunes on the
validation window and reports the test window.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

GRU_HIDDEN = 64  # small on purpose: a d-wide GRU costs ~10x the attention tower per epoch on CPU
DEFAULT_EVENT_WEIGHTS = {"search": 0.5, "view": 1.0, "click": 0.5, "cart": 3.0, "remove_from_cart": -1.0,
                         "checkout": 3.0, "purchase": 5.0, "return": -2.0, "review": 2.0}


class NotEnoughBehaviour(ValueError):
    """Too few (history, next target) examples before the cutoff to train on; the message says how many."""


@dataclass
class RefineConfig:
    """Hyper-parameters of one refinement configuration (the bench compares several)."""

    item_tower: str = "fused"          # "text" (frozen text vectors) | "fused" (ml.fusion projection, learned)
    user_tower: str = "attention"      # "attention" | "gru"
    max_history: int = 50
    epochs: int = 4
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.0
    temperature: float = 0.05
    logq: bool = True
    train_targets: list[str] | None = None   # event types that are positives; None = the evaluation targets
    max_examples: int | None = 30000          # most recent training examples kept (bounds CPU time)
    field_dim: int = 16
    n_buckets: int = 4096
    seed: int = 0
    device: str = "auto"
    event_weights: dict = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    half_life_days: float = 14.0

    def __post_init__(self) -> None:
        if self.item_tower not in ("text", "fused"):
            raise ValueError(f"refinement item_tower must be 'text' or 'fused', got {self.item_tower!r}")
        if self.user_tower not in ("attention", "gru"):
            raise ValueError(f"refinement user_tower must be 'attention' or 'gru', got {self.user_tower!r}")
        if self.max_history < 1 or self.batch_size < 2 or self.epochs < 0:
            raise ValueError("refinement needs max_history >= 1, batch_size >= 2, epochs >= 0")

    def as_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------- data


@dataclass
class Histories:
    """Padded histories: row r = one (user, reference time); valid positions first, chronological."""

    items: np.ndarray   # (n, L) int64 catalog index, 0 where padded
    types: np.ndarray   # (n, L) int64 event-type code
    age: np.ndarray     # (n, L) float32 days before the reference time
    length: np.ndarray  # (n,) int64 number of valid positions (>= 1)

    def __len__(self) -> int:
        return len(self.length)

    def take(self, rows) -> "Histories":
        return Histories(self.items[rows], self.types[rows], self.age[rows], self.length[rows])


@dataclass
class Prepared:
    """Identified users' catalog events strictly before `as_of`, sorted by user then time."""

    user_ids: np.ndarray     # distinct users, sorted
    block: np.ndarray        # (n_users + 1,) start of each user's events
    item: np.ndarray         # catalog index per event
    etype: np.ndarray        # event-type code per event
    ts: np.ndarray           # float days since epoch per event
    session: np.ndarray      # session key per event (int codes)
    is_target: np.ndarray    # event type is a training target
    as_of: pd.Timestamp
    type_names: list[str]


def _days(ts: pd.Series) -> np.ndarray:
    return (pd.to_datetime(ts).astype("datetime64[us]").astype("int64").to_numpy() / 86_400e6).astype(np.float64)


def prepare(events: pd.DataFrame, item_ids: list[str], as_of: Any, target_types: list[str],
            type_names: list[str]) -> Prepared:
    """Index identified users' catalog events before as_of; everything at or after as_of is dropped first."""
    missing = [c for c in ("user_id", "session_id", "ts", "event_type", "item_id") if c not in events.columns]
    if missing:
        raise KeyError(f"events lack column(s) {missing} needed for refinement")
    as_of = pd.Timestamp(as_of)
    ts = pd.to_datetime(events["ts"])
    keep = (ts < as_of).to_numpy() & events["user_id"].notna().to_numpy() & events["item_id"].notna().to_numpy()
    ev = events.loc[keep, ["user_id", "session_id", "event_type", "item_id"]].copy()
    ev["ts"] = ts[keep]
    catalog = pd.Index([str(i) for i in item_ids])
    ev["i"] = catalog.get_indexer(ev["item_id"].astype(str))
    ev = ev[ev["i"] >= 0]
    ev["user_id"] = ev["user_id"].astype(str)
    ev = ev.sort_values(["user_id", "ts"], kind="stable")
    users, first = np.unique(ev["user_id"].to_numpy(), return_index=True)
    block = np.append(first, len(ev)).astype(np.int64)
    codes = {t: k for k, t in enumerate(type_names)}
    etype = ev["event_type"].map(codes).fillna(len(type_names) - 1).to_numpy(dtype=np.int64)
    session = pd.factorize(ev["user_id"] + "\x1f" + ev["session_id"].astype(str))[0].astype(np.int64)
    return Prepared(users, block, ev["i"].to_numpy(dtype=np.int64), etype, _days(ev["ts"]), session,
                    ev["event_type"].isin(list(target_types)).to_numpy(), as_of, list(type_names))


def _histories(p: Prepared, ends: np.ndarray, starts: np.ndarray, ref_days: np.ndarray, L: int) -> Histories:
    """The last L events in [starts, ends) of the sorted event arrays, ages relative to ref_days."""
    lo = np.maximum(starts, ends - L)
    length = (ends - lo).astype(np.int64)
    pos = lo[:, None] + np.arange(L)[None, :]
    valid = np.arange(L)[None, :] < length[:, None]
    pos = np.where(valid, pos, 0)
    items = np.where(valid, p.item[pos], 0)
    types = np.where(valid, p.etype[pos], 0)
    age = np.where(valid, ref_days[:, None] - p.ts[pos], 0.0).astype(np.float32)
    return Histories(items.astype(np.int64), types.astype(np.int64), np.clip(age, 0, None), length)


def training_examples(p: Prepared, L: int, max_examples: int | None = None) -> tuple[Histories, np.ndarray]:
    """(histories, target item) for each (session with a target event, target item), history = before the session.

    A user's first session has no history and yields nothing; repeated (session, item) pairs count once.
    With `max_examples`, only the most recent sessions' examples are kept (closest to the cutoff, so
    most like what is evaluated), which bounds training time on large logs.
    """
    if len(p.item) == 0:
        return Histories(np.zeros((0, L), np.int64), np.zeros((0, L), np.int64), np.zeros((0, L), np.float32),
                         np.zeros(0, np.int64)), np.zeros(0, np.int64)
    user_of = np.repeat(np.arange(len(p.user_ids)), np.diff(p.block))
    # first event index of each session (events are sorted by user, ts)
    first_idx = pd.Series(np.arange(len(p.item))).groupby(p.session).min()
    sess_start = first_idx.reindex(p.session).to_numpy()
    t = np.flatnonzero(p.is_target)
    pairs = pd.DataFrame({"s": p.session[t], "i": p.item[t], "start": sess_start[t], "u": user_of[t]})
    pairs = pairs.drop_duplicates(["s", "i"])
    # history = the user's events strictly before the session's first event time
    start_ts = p.ts[pairs["start"].to_numpy()]
    u = pairs["u"].to_numpy()
    # one searchsorted over (user, time) keys: events are sorted by user, then time
    span = float(p.ts.max() - p.ts.min()) + 1.0
    key = user_of * span + (p.ts - p.ts.min())
    ends = np.searchsorted(key, u * span + (start_ts - p.ts.min()), side="left").astype(np.int64)
    starts = p.block[u]
    keep = np.flatnonzero(ends > starts)
    if max_examples is not None and len(keep) > max_examples:
        recent = np.argsort(-start_ts[keep], kind="stable")[:max_examples]
        keep = np.sort(keep[recent])
    hist = _histories(p, ends[keep], starts[keep], start_ts[keep], L)
    return hist, pairs["i"].to_numpy()[keep]


def cutoff_histories(p: Prepared, users: list[str], L: int) -> tuple[list[str], Histories]:
    """Histories as of p.as_of for the given users that have at least one event (others are left out)."""
    idx = np.searchsorted(p.user_ids, np.asarray(users, dtype=object).astype(str))
    idx = np.clip(idx, 0, max(len(p.user_ids) - 1, 0))
    known = np.array([len(p.user_ids) > 0 and p.user_ids[j] == u for j, u in zip(idx, users)], dtype=bool)
    kept = [u for u, k in zip(users, known) if k]
    j = idx[known]
    ref = np.full(len(j), _days(pd.Series([p.as_of]))[0])
    return kept, _histories(p, p.block[j + 1], p.block[j], ref, L)


# -------------------------------------------------------------------------------------------- model


def resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def build_model(cfg: RefineConfig, text: np.ndarray, codes: np.ndarray | None, image: np.ndarray | None,
                type_names: list[str]):
    """The two-tower module; see the module docstring for the initialisation that reproduces the unrefined profile."""
    import torch
    from torch import nn

    from ml.fusion import fused_tower

    class TwoTower(nn.Module):
        def __init__(self):
            super().__init__()
            if cfg.item_tower == "fused":
                self.items = fused_tower(text, codes, image, n_buckets=cfg.n_buckets, field_dim=cfg.field_dim)
            else:
                self.items = None
                self.register_buffer("text", torch.as_tensor(np.asarray(text, dtype=np.float32)))
            d = int(np.asarray(text).shape[1])
            w = [cfg.event_weights.get(t, 0.0) for t in type_names]
            self.type_bias = nn.Parameter(torch.tensor([math.log(x) if x > 0 else -4.0 for x in w], dtype=torch.float32))
            rate = math.log(2.0) / float(cfg.half_life_days)
            self.raw_rate = nn.Parameter(torch.tensor(math.log(math.expm1(rate)), dtype=torch.float32))
            self.query = nn.Parameter(torch.zeros(d))
            self.proj = nn.Linear(d, d)
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(d))
                self.proj.bias.zero_()
            if cfg.user_tower == "gru":
                self.type_emb = nn.Embedding(len(type_names), 16)
                self.gru = nn.GRU(d + 16, GRU_HIDDEN, batch_first=True)
                self.gru_out = nn.Linear(GRU_HIDDEN, d)
                nn.init.zeros_(self.gru_out.weight)
                nn.init.zeros_(self.gru_out.bias)

        def item_vectors(self):
            raw = self.items() if self.items is not None else self.text
            return nn.functional.normalize(raw, dim=1)

        def user_vectors(self, V, items, types, age, length):
            h = V[items]                                        # (B, L, d)
            L = items.shape[1]
            mask = torch.arange(L, device=items.device)[None, :] < length[:, None]
            rate = nn.functional.softplus(self.raw_rate)
            logits = self.type_bias[types] - rate * age + h @ self.query
            logits = logits.masked_fill(~mask, float("-inf"))
            a = torch.softmax(logits, dim=1)
            pooled = (a.unsqueeze(-1) * h).sum(dim=1)
            if cfg.user_tower == "gru":
                x = torch.cat([h, self.type_emb(types)], dim=-1)
                packed = nn.utils.rnn.pack_padded_sequence(x, length.cpu(), batch_first=True, enforce_sorted=False)
                _, last = self.gru(packed)
                pooled = pooled + self.gru_out(last[-1])
            return nn.functional.normalize(self.proj(pooled), dim=1)

    return TwoTower()


# -------------------------------------------------------------------------------------------- train


@dataclass
class Refined:
    """A trained refinement: the model, its config and per-epoch training losses."""

    model: Any
    cfg: RefineConfig
    type_names: list[str]
    losses: list[float]
    n_examples: int
    device: str

    def item_matrix(self) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model.item_vectors().float().cpu().numpy()

    def user_matrix(self, hist: Histories, batch: int = 2048) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            V = self.model.item_vectors()
            for s in range(0, len(hist), batch):
                h = hist.take(slice(s, s + batch))
                out.append(self.model.user_vectors(V, *_tensors(h, self.device)).float().cpu().numpy())
        d = int(self.model.proj.weight.shape[0])
        return np.vstack(out) if out else np.zeros((0, d), np.float32)


def _tensors(h: Histories, device: str):
    import torch

    return (torch.as_tensor(h.items, device=device), torch.as_tensor(h.types, device=device),
            torch.as_tensor(h.age, device=device), torch.as_tensor(h.length, device=device))


def type_vocabulary(event_weights: dict) -> list[str]:
    """Event types the user tower knows (those with a configured weight) plus a catch-all 'other'."""
    return sorted(event_weights) + ["other"]


def train(events: pd.DataFrame, item_ids: list[str], text: np.ndarray, as_of: Any, target_types: list[str],
          cfg: RefineConfig, codes: np.ndarray | None = None, image: np.ndarray | None = None,
          progress: bool = True, on_epoch: Callable[[int, "Refined"], None] | None = None) -> Refined:
    """Train on events strictly before `as_of`; `on_epoch(epoch, refined)` is called after each epoch (and at 0).

    Deterministic for a given seed on a given device: torch and the shuffling are seeded.
    """
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    type_names = type_vocabulary(cfg.event_weights)
    prep = prepare(events, item_ids, as_of, cfg.train_targets or target_types, type_names)
    hist, targets = training_examples(prep, cfg.max_history, cfg.max_examples)
    if len(targets) < cfg.batch_size // 4:
        raise NotEnoughBehaviour(f"refinement: only {len(targets)} training examples before {pd.Timestamp(as_of)} "
                         f"(sessions with a target event and earlier history); need at least {cfg.batch_size // 4}")
    model = build_model(cfg, text, codes, image, type_names).to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    counts = np.bincount(targets, minlength=len(item_ids)).astype(np.float64)
    logq = torch.as_tensor(np.log((counts + 1.0) / (counts + 1.0).sum()), dtype=torch.float32, device=device)
    tgt_all = torch.as_tensor(targets, device=device)
    rng = np.random.default_rng(cfg.seed)
    refined = Refined(model, cfg, type_names, [], len(targets), device)
    if on_epoch:
        model.eval()
        on_epoch(0, refined)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = rng.permutation(len(targets))
        batches = [order[s:s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
        batches = [b for b in batches if len(b) >= 2]
        total = 0.0
        bar = tqdm(batches, desc=f"refine epoch {epoch}/{cfg.epochs}", unit="batch", disable=not progress, leave=False)
        for b in bar:
            h = hist.take(b)
            t = tgt_all[torch.as_tensor(b, device=device)]
            V = model.item_vectors()
            U = model.user_vectors(V, *_tensors(h, device))
            logits = (U @ V[t].T) / cfg.temperature
            if cfg.logq:
                logits = logits - logq[t][None, :]
            same = (t[:, None] == t[None, :]) & ~torch.eye(len(b), dtype=torch.bool, device=device)
            logits = logits.masked_fill(same, float("-inf"))
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(b), device=device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            value = float(loss.detach())
            total += value * len(b)
            bar.set_postfix(loss=f"{value:.3f}")
        refined.losses.append(total / max(len(targets), 1))
        model.eval()
        if on_epoch:
            on_epoch(epoch, refined)
    return refined


# ----------------------------------------------------------------------------------------- retrieve


def top_k(user_matrix: np.ndarray, item_matrix: np.ndarray, item_ids: list[str], k: int = 20) -> list[list[str]]:
    """Top-k item ids per user by dot product (cosine for unit vectors); ties broken by catalog order."""
    scores = user_matrix @ item_matrix.T
    out = []
    for row in scores:
        part = np.argpartition(-row, min(k, len(row) - 1))[:k]
        order = part[np.lexsort((part, -row[part]))]
        out.append([str(item_ids[i]) for i in order])
    return out


def refined_lists(refined: Refined, events: pd.DataFrame | None, item_ids: list[str], as_of: Any, users: list[str],
                  k: int = 20, prepared: Prepared | None = None) -> dict[str, list[str]]:
    """Top-k retrieval lists for `users` from their history strictly before as_of (users with none get no list).

    `prepared` (from `prepare` at the same as_of) skips re-indexing the events when lists are needed per epoch.
    """
    prep = prepared if prepared is not None else prepare(events, item_ids, as_of, [], refined.type_names)
    if pd.Timestamp(prep.as_of) != pd.Timestamp(as_of):
        raise ValueError(f"prepared events are as of {prep.as_of}, lists were asked as of {as_of}")
    kept, hist = cutoff_histories(prep, list(users), refined.cfg.max_history)
    if not kept:
        return {}
    lists = top_k(refined.user_matrix(hist), refined.item_matrix(), item_ids, k)
    return dict(zip(kept, lists))


def unrefined_lists(events: pd.DataFrame, item_ids: list[str], text: np.ndarray, as_of: Any, users: list[str],
                    event_weights: dict, half_life_days: float, k: int = 20) -> dict[str, list[str]]:
    """The baseline: `ml.profiles.user_vectors` against the text embeddings, cosine top-k."""
    from ml.profiles import user_vectors

    wanted = set(map(str, users))
    uids, U = user_vectors(events, item_ids, text, as_of, event_weights, half_life_days)
    rows = [n for n, u in enumerate(uids) if u in wanted]
    lists = top_k(U[rows], np.asarray(text, dtype=np.float32), item_ids, k)
    return {uids[n]: l for n, l in zip(rows, lists)}


CONFIG_KEYS = ("item_tower", "user_tower", "max_history", "epochs", "batch_size", "lr", "weight_decay", "temperature",
               "logq", "max_examples", "field_dim", "n_buckets", "seed", "device")


def config_from_settings(cfg: dict) -> RefineConfig:
    """RefineConfig from the resolved persona config (`refinement` section + the profile weighting it starts from)."""
    section = dict(cfg.get("refinement") or {})
    unknown = sorted(set(section) - set(CONFIG_KEYS) - {"enabled"})
    if unknown:
        raise ValueError(f"refinement: unknown key(s) {unknown}; known: {sorted(CONFIG_KEYS) + ['enabled']}")
    pc = cfg["profiles"]
    return RefineConfig(**{k: section[k] for k in CONFIG_KEYS if k in section},
                        event_weights=dict(pc["event_weights"]), half_life_days=float(pc["half_life_days"]))


def with_overrides(cfg: RefineConfig, **changes) -> RefineConfig:
    out = copy.deepcopy(cfg)
    for k, v in changes.items():
        setattr(out, k, v)
    out.__post_init__()
    return out
