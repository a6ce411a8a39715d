"""User profiles as of a cutoff: a profile vector, readable tags, a segment and up to a few interest
vectors (one per category the user cares about) per identified user.

Everything is computed from events strictly before `as_of` (the first thing each function does is
drop the rest), so a profile built for a training cutoff never sees the period it is evaluated on.
The vector is a time-decayed, event-weighted mean of the embeddings of the items a user touched:
a purchase counts more than a view, yesterday more than last month, and a removal pulls away.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from ml import tags as T
from ml.segments import choose_k_and_cluster, summarize_segments

CART_LIKE = ("cart", "checkout")
INTENT_DAYS = 7
ACTIVITY_DAYS = 30
TOP_CATEGORIES = 3
TOP_BRANDS = 2
MAX_INTERESTS = 3
INTEREST_MIN_SHARE = 0.15
OVERALL_INTEREST = "overall"


def _profiles_cfg(cfg: Any) -> dict:
    """Accept the `profiles` section, the whole config dict or a Settings object."""
    if hasattr(cfg, "data"):
        cfg = cfg.data
    return dict(cfg["profiles"]) if isinstance(cfg, dict) and "profiles" in cfg else dict(cfg)


def _cutoff(as_of: Any) -> pd.Timestamp:
    """as_of as a naive UTC timestamp in microseconds, like the canonical `ts`."""
    ts = pd.Timestamp(as_of)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.as_unit("us")


def _before(events: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Identified users' events strictly before as_of: the only rows any profile may use."""
    ts = pd.to_datetime(events["ts"])
    keep = events["user_id"].notna().to_numpy() & (ts < as_of).to_numpy()
    out = events.loc[keep].copy()
    out["ts"] = ts[keep]
    out["user_id"] = out["user_id"].astype(str)
    return out


def decay_weights(event_type: pd.Series, ts: pd.Series, as_of: Any, event_weights: dict,
                  half_life_days: float) -> np.ndarray:
    """weight[event_type] * 0.5 ** (age_days / half_life_days); unknown types weigh 0."""
    base = event_type.map(event_weights).fillna(0.0).to_numpy(dtype=np.float64)
    age = ((pd.Timestamp(as_of) - pd.to_datetime(ts)) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64)
    return base * np.power(0.5, np.clip(age, 0.0, None) / float(half_life_days))


def user_vectors(events: pd.DataFrame, item_ids: list[str], item_matrix: np.ndarray, as_of: Any,
                 event_weights: dict, half_life_days: float) -> tuple[list[str], np.ndarray]:
    """(user_ids, (n_users, dim) float32) for every identified user with an event before as_of.

    Row = L2-normalised sum over the user's events of decay weight x item embedding (the weighted
    mean up to its positive scale, which normalising removes). Negative event weights subtract.
    When the weights sum to <= 0 or cancel out, the row falls back to the plain mean of the user's
    distinct items' embeddings; a user none of whose items has an embedding gets a zero row.
    Users come out sorted by id, so the output is deterministic.
    """
    as_of = _cutoff(as_of)
    ev = _before(events, as_of)
    item_matrix = np.asarray(item_matrix, dtype=np.float32)
    dim = item_matrix.shape[1] if item_matrix.ndim == 2 else 0
    users = np.sort(ev["user_id"].unique())
    if len(users) == 0:
        return [], np.zeros((0, dim), dtype=np.float32)
    u_idx = np.searchsorted(users, ev["user_id"].to_numpy())
    i_idx = pd.Index(pd.Series(item_ids, dtype=object).astype(str)).get_indexer(
        ev["item_id"].astype(object).where(ev["item_id"].notna(), None))
    has = i_idx >= 0
    w = decay_weights(ev["event_type"], ev["ts"], as_of, event_weights, half_life_days)
    n_u, n_i = len(users), len(item_ids)

    W = sparse.csr_matrix((w[has], (u_idx[has], i_idx[has])), shape=(n_u, n_i))
    weighted = np.asarray(W @ item_matrix, dtype=np.float64)
    wsum = np.asarray(W.sum(axis=1)).ravel()
    # Plain mean fallback over distinct embedded items (binary user x item matrix).
    B = sparse.csr_matrix((np.ones(has.sum()), (u_idx[has], i_idx[has])), shape=(n_u, n_i))
    B.data[:] = 1.0
    plain = np.asarray(B @ item_matrix, dtype=np.float64)

    norms = np.linalg.norm(weighted, axis=1)
    use_weighted = (wsum > 0) & (norms > 1e-9)
    vec = np.where(use_weighted[:, None], weighted, plain)
    norms = np.linalg.norm(vec, axis=1, keepdims=True)
    vec = np.divide(vec, norms, out=np.zeros_like(vec), where=norms > 1e-12)
    return users.tolist(), vec.astype(np.float32)


def build_profiles(events: pd.DataFrame, items: pd.DataFrame, item_ids: list[str], item_matrix: np.ndarray,
                   as_of: Any, cfg: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(user_profiles, segment_summary) as of `as_of`; see the module and `ml.tags` for the rules.

    `cfg` is the `profiles` config section (or the whole config). One profile row per identified
    user with at least one event before as_of.
    """
    pc = _profiles_cfg(cfg)
    as_of = _cutoff(as_of)
    weights, half_life = pc["event_weights"], float(pc["half_life_days"])
    ev = _before(events, as_of)
    users, V = user_vectors(ev, item_ids, item_matrix, as_of, weights, half_life)
    n = len(users)
    profile_cols = ["user_id", "as_of", "vector", "segment", "n_events", "n_sessions", "n_items", "first_ts",
                    "last_ts", "avg_price", "top_categories", "top_brands", "price_band", "activity_level",
                    "lifecycle_stage", "purchase_intent", "tags"]
    if n == 0:
        return pd.DataFrame(columns=profile_cols), summarize_segments(pd.DataFrame(columns=profile_cols))

    ev["w"] = decay_weights(ev["event_type"], ev["ts"], as_of, weights, half_life)
    uid = ev["user_id"]
    g = ev.groupby("user_id", sort=True)
    stats = pd.DataFrame({
        "n_events": g.size(),
        "n_sessions": g["session_id"].nunique(),
        "n_items": g["item_id"].nunique(),
        "first_ts": g["ts"].min(),
        "last_ts": g["ts"].max(),
    }).reindex(users)

    # Item attributes come from the catalog; the event's own price fills a missing catalog price.
    cat = items.drop_duplicates("item_id").assign(item_id=lambda d: d["item_id"].astype(str)).set_index("item_id")
    ev_item = ev["item_id"].astype(object)
    category = ev_item.map(cat["category_path"].map(T.category_key)) if "category_path" in cat else None
    brand = ev_item.map(cat["brand"].map(T.clean_brand)) if "brand" in cat else None
    item_price = ev_item.map(cat["price"]) if "price" in cat else pd.Series(np.nan, index=ev.index)
    event_price = pd.to_numeric(ev["price"], errors="coerce") if "price" in ev else np.nan
    price = pd.to_numeric(item_price, errors="coerce").fillna(event_price)
    per_item = pd.DataFrame({"u": uid, "i": ev_item, "p": price}).dropna(subset=["i"])
    avg_price = per_item.groupby(["u", "i"])["p"].mean().groupby(level="u").mean().reindex(users)

    none = np.full(len(ev), None, dtype=object)
    top_cat = T.top_keys(uid.to_numpy(), none if category is None else category.to_numpy(), ev["w"].to_numpy(),
                         TOP_CATEGORIES)
    top_brand = T.top_keys(uid.to_numpy(), none if brand is None else brand.to_numpy(), ev["w"].to_numpy(), TOP_BRANDS)

    recent = ev[ev["ts"] >= as_of - pd.Timedelta(days=ACTIVITY_DAYS)].groupby("user_id").size()
    recent = recent.reindex(users, fill_value=0).to_numpy()

    # Purchase intent: a cart/checkout in the last `intent_days` (7) days with no purchase at or after it.
    window = ev[ev["ts"] >= as_of - pd.Timedelta(days=float(pc.get("intent_days", INTENT_DAYS)))]
    last_cart = window[window["event_type"].isin(CART_LIKE)].groupby("user_id")["ts"].max().reindex(users)
    last_buy = ev[ev["event_type"] == "purchase"].groupby("user_id")["ts"].max().reindex(users)
    intent = (last_cart.notna() & ~(last_buy >= last_cart)).to_numpy()

    bands = T.price_band(avg_price.to_numpy(), T.price_tertiles(items["price"] if "price" in items else []))
    activity = T.activity_level(recent)
    stage = T.lifecycle_stage(stats["first_ts"], stats["last_ts"], as_of, pc["lifecycle_days"])

    labels, k, scores = choose_k_and_cluster(V, int(pc["k_min"]), int(pc["k_max"]),
                                             int(pc.get("silhouette_sample", 4000)), seed=int(pc.get("seed", 0)))
    cats = [top_cat.get(u, []) for u in users]
    brands = [top_brand.get(u, []) for u in users]
    tag_lists = [T.make_tags(c, b, p, a, s, bool(i))
                 for c, b, p, a, s, i in zip(cats, brands, bands, activity, stage, intent)]

    profiles = pd.DataFrame({
        "user_id": users,
        "as_of": as_of,
        "vector": list(V),
        "segment": labels.astype(np.int64),
        "n_events": stats["n_events"].to_numpy(dtype=np.int64),
        "n_sessions": stats["n_sessions"].to_numpy(dtype=np.int64),
        "n_items": stats["n_items"].to_numpy(dtype=np.int64),
        "first_ts": stats["first_ts"].to_numpy(),
        "last_ts": stats["last_ts"].to_numpy(),
        "avg_price": avg_price.to_numpy(dtype=np.float64),
        "top_categories": cats,
        "top_brands": brands,
        "price_band": bands,
        "activity_level": activity,
        "lifecycle_stage": stage,
        "purchase_intent": intent.astype(bool),
        "tags": tag_lists,
    })
    summary = summarize_segments(profiles, scores)
    return profiles, summary


def user_interests(events: pd.DataFrame, items: pd.DataFrame, item_ids: list[str], item_matrix: np.ndarray,
                   as_of: Any, cfg: Any) -> pd.DataFrame:
    """Several interest vectors per user: one per category the user engaged with, strongest first.

    One profile vector averages a user who buys drinkware and browses men's apparel into a point
    between the two that matches neither; retrieval per interest keeps both. For each (user,
    category) pair, with the same decayed event weights as the profile vector (events before as_of
    only): weight = the pair's summed weight, vector = the L2-normalised weighted sum of its items'
    embeddings (plain mean of its items if removals cancel it out). Pairs with a summed weight <= 0
    are not interests. A user keeps their strongest category and every further one holding at least
    `interest_min_share` of their positive category weight, at most `max_interests`; kept weights are
    rescaled to sum to 1. Junk categories (`ml.tags.is_junk`) are never interests. A user with no
    categorised item gets one interest labelled "overall" (weight 1) holding their profile vector,
    so every profiled user has at least one row.

    Returns columns user_id, interest_rank (1 = strongest), label, weight, n_items, vector
    (float32), sorted by user and rank.
    """
    pc = _profiles_cfg(cfg)
    max_interests = int(pc.get("max_interests", MAX_INTERESTS))
    min_share = float(pc.get("interest_min_share", INTEREST_MIN_SHARE))
    if max_interests < 1:
        raise ValueError(f"profiles.max_interests must be >= 1, got {pc.get('max_interests')!r}")
    if not 0.0 <= min_share < 1.0:
        raise ValueError(f"profiles.interest_min_share must be within [0, 1), got {pc.get('interest_min_share')!r}")
    as_of = _cutoff(as_of)
    weights, half_life = pc["event_weights"], float(pc["half_life_days"])
    ev = _before(events, as_of)
    users, V = user_vectors(ev, item_ids, item_matrix, as_of, weights, half_life)
    cols = ["user_id", "interest_rank", "label", "weight", "n_items", "vector"]
    if not users:
        return pd.DataFrame(columns=cols)
    item_matrix = np.asarray(item_matrix, dtype=np.float32)
    index = pd.Index(pd.Series(item_ids, dtype=object).astype(str))
    ev_item = ev["item_id"].astype(object).where(ev["item_id"].notna(), None)
    i_idx = index.get_indexer(ev_item)
    cat = items.drop_duplicates("item_id").assign(item_id=lambda d: d["item_id"].astype(str)).set_index("item_id")
    label = (ev_item.map(cat["category_path"].map(T.category_key)) if "category_path" in cat
             else pd.Series(None, index=ev.index, dtype=object))
    keep = (i_idx >= 0) & label.notna().to_numpy()
    w = decay_weights(ev["event_type"], ev["ts"], as_of, weights, half_life)[keep]
    pair_u, pair_l, i_idx = ev["user_id"].to_numpy()[keep], label.to_numpy()[keep], i_idx[keep]

    pairs = pd.DataFrame({"user_id": pair_u, "label": pair_l})
    pid = pairs.groupby(["user_id", "label"], sort=False).ngroup().to_numpy()
    n_p, n_i = int(pid.max()) + 1 if len(pid) else 0, len(item_ids)
    table = pairs.assign(pid=pid).drop_duplicates("pid").sort_values("pid").reset_index(drop=True)
    table["wsum"] = np.bincount(pid, weights=w, minlength=n_p)
    table["n_items"] = pd.DataFrame({"p": pid, "i": i_idx}).drop_duplicates().groupby("p").size().reindex(
        range(n_p), fill_value=0).to_numpy()
    table = table[table["wsum"] > 0]
    table["share"] = table["wsum"] / table.groupby("user_id")["wsum"].transform("sum")
    table = table.sort_values(["user_id", "wsum", "label"], ascending=[True, False, True], kind="mergesort")
    table["interest_rank"] = table.groupby("user_id").cumcount() + 1
    table = table[((table["interest_rank"] == 1) | (table["share"] >= min_share))
                  & (table["interest_rank"] <= max_interests)].copy()
    table["weight"] = table["wsum"] / table.groupby("user_id")["wsum"].transform("sum")

    W = sparse.csr_matrix((w, (pid, i_idx)), shape=(n_p, n_i))
    B = sparse.csr_matrix((np.ones(len(pid)), (pid, i_idx)), shape=(n_p, n_i))
    B.data[:] = 1.0
    rows = table["pid"].to_numpy()
    weighted = np.asarray(W[rows] @ item_matrix, dtype=np.float64)
    plain = np.asarray(B[rows] @ item_matrix, dtype=np.float64)
    use = np.linalg.norm(weighted, axis=1) > 1e-9
    vec = np.where(use[:, None], weighted, plain)
    norms = np.linalg.norm(vec, axis=1, keepdims=True)
    vec = np.divide(vec, norms, out=np.zeros_like(vec), where=norms > 1e-12).astype(np.float32)
    out = table[["user_id", "interest_rank", "label", "weight", "n_items"]].assign(vector=list(vec))

    missing = sorted(set(users) - set(out["user_id"]))
    if missing:
        row_of = {u: r for r, u in enumerate(users)}
        n_items = ev[ev["user_id"].isin(missing)].groupby("user_id")["item_id"].nunique().reindex(missing, fill_value=0)
        overall = pd.DataFrame({"user_id": missing, "interest_rank": 1, "label": OVERALL_INTEREST, "weight": 1.0,
                                "n_items": n_items.to_numpy(), "vector": [V[row_of[u]] for u in missing]})
        out = pd.concat([out, overall], ignore_index=True)
    out = out.sort_values(["user_id", "interest_rank"], kind="mergesort").reset_index(drop=True)
    return out.astype({"interest_rank": np.int64, "weight": np.float64, "n_items": np.int64})[cols]
