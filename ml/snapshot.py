"""The as-of state of the shop: everything candidates and features need, as plain numpy arrays.

One `Snapshot` is built per cutoff from events strictly before it. Training builds one per window;
the serving snapshot (cutoff = after the last event) is saved into the model version folder and
loaded by the server with numpy alone, so offline and online features come from the same arrays
and the same code (`ml.candidates`, `ml.features`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from ml.reviews import REVIEW_FEATURES, review_aggregates

UI_FEATURES = ["ui_n_view", "ui_n_click", "ui_n_cart", "ui_n_remove", "ui_n_checkout", "ui_n_purchase",
               "ui_score", "ui_days_since_last", "ui_in_last_session"]
ITEM_FEATURES = ["it_pop_7d", "it_pop_30d", "it_pop_all", "it_target_7d", "it_cart_rate",
                 "it_purchase_rate", "it_price", "it_age_days", "it_trend"]
ITEM_FEATURES += ["it_n_reviews", "it_mean_rating", "it_mean_sentiment"]  # ml.reviews.review_aggregates
USER_FEATURES = ["u_n_events", "u_n_items", "u_n_sessions", "u_days_since_last", "u_days_since_first",
                 "u_n_carts", "u_n_purchases", "u_avg_price"]
USER_FEATURES += ["u_n_reviews", "u_mean_rating", "u_mean_sentiment"]  # ml.reviews.review_aggregates
_UI_TYPES = {"view": "ui_n_view", "click": "ui_n_click", "cart": "ui_n_cart",
             "remove_from_cart": "ui_n_remove", "checkout": "ui_n_checkout", "purchase": "ui_n_purchase"}
MISSING = -1.0  # sentinel instead of NaN: identical handling in LightGBM and the ONNX tree ensemble
NEVER_DAYS = 9999.0


@dataclass
class Snapshot:
    as_of: np.datetime64
    item_ids: np.ndarray
    item_emb: np.ndarray
    item_feat: np.ndarray
    item_cat: np.ndarray
    item_top: np.ndarray
    item_brand: np.ndarray
    pop_order: np.ndarray
    covis_ptr: np.ndarray
    covis_idx: np.ndarray
    covis_w: np.ndarray
    user_ids: np.ndarray
    user_feat: np.ndarray
    user_vec: np.ndarray
    hist_ptr: np.ndarray
    hist_item: np.ndarray
    hist_feat: np.ndarray
    cat_ptr: np.ndarray
    cat_id: np.ndarray
    cat_w: np.ndarray
    top_ptr: np.ndarray
    top_id: np.ndarray
    top_w: np.ndarray
    brand_ptr: np.ndarray
    brand_id: np.ndarray
    brand_w: np.ndarray
    meta: dict = field(default_factory=dict)
    # peer signals (ml.candidates sources "als" / "itemknn"); defaults keep older saved snapshots loadable
    knn_ptr: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    knn_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    knn_w: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    als_item: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # item factors
    als_gram: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # YtY + reg*I
    als_alpha: np.ndarray = field(default_factory=lambda: np.ones(1, np.float32))       # confidence scale

    def __post_init__(self) -> None:
        self.item_index = {str(i): n for n, i in enumerate(self.item_ids)}
        self.user_index = {str(u): n for n, u in enumerate(self.user_ids)}
        self.pop_rank = np.empty(len(self.item_ids), dtype=np.float32)
        self.pop_rank[self.pop_order] = np.arange(len(self.pop_order), dtype=np.float32)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def history(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        s, e = self.hist_ptr[u], self.hist_ptr[u + 1]
        return self.hist_item[s:e], self.hist_feat[s:e]

    def neighbors(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s, e = self.covis_ptr[i], self.covis_ptr[i + 1]
        return self.covis_idx[s:e], self.covis_w[s:e]

    def knn_neighbors(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i + 1 >= len(self.knn_ptr):
            return self.knn_idx[:0], self.knn_w[:0]
        s, e = self.knn_ptr[i], self.knn_ptr[i + 1]
        return self.knn_idx[s:e], self.knn_w[s:e]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("meta", "as_of")}
        arrays["item_ids"] = arrays["item_ids"].astype(str)
        arrays["user_ids"] = arrays["user_ids"].astype(str)
        np.savez(folder / "snapshot.npz", **arrays)
        meta = dict(self.meta, as_of=str(pd.Timestamp(self.as_of)))
        (folder / "snapshot.json").write_text(json.dumps(meta, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Snapshot":
        folder = Path(folder)
        meta = json.loads((folder / "snapshot.json").read_text())
        with np.load(folder / "snapshot.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(as_of=np.datetime64(pd.Timestamp(meta["as_of"])), meta=meta, **arrays)


def _csr(keys: np.ndarray, n_keys: int) -> np.ndarray:
    """Row pointers for rows already sorted by integer key."""
    counts = np.bincount(keys, minlength=n_keys)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    cats = pd.Categorical(values)
    return cats.codes.astype(np.int32), [str(c) for c in cats.categories]


def build_snapshot(events: pd.DataFrame, items: pd.DataFrame, item_ids: list[str], item_matrix: np.ndarray,
                   user_ids: list[str], user_matrix: np.ndarray, as_of, cfg: dict) -> Snapshot:
    """State as of `as_of` from events strictly before it.

    events: canonical columns user_id, session_id, ts, event_type, item_id, price; optional rating and
    sentiment (review events: ml.reviews) feed the review features, which are 0 where a source has no reviews.
    items: item_id, category_path, brand, price. item_ids/item_matrix: the embedding table (catalog order).
    user_ids/user_matrix: profile vectors as of the same cutoff (ml.profiles.user_vectors).
    cfg: the resolved `persona.yaml` dict (profiles.event_weights, profiles.half_life_days, candidates.*).
    """
    as_of = pd.Timestamp(as_of)
    ev = events.loc[(events["ts"] < as_of) & events["item_id"].notna()].copy()
    catalog = pd.Index([str(i) for i in item_ids])
    ev = ev.loc[ev["item_id"].isin(catalog)]
    ev["i"] = catalog.get_indexer(ev["item_id"]).astype(np.int32)
    ev["age_days"] = (as_of - ev["ts"]).dt.total_seconds().to_numpy() / 86400.0
    weights = cfg["profiles"]["event_weights"]
    half_life = float(cfg["profiles"]["half_life_days"])
    ev["w"] = ev["event_type"].map(weights).fillna(0.0) * np.power(0.5, ev["age_days"] / half_life)
    n_items = len(catalog)
    targets = set(cfg["targets"])

    # item statistics (all events, anonymous included)
    itm = items.set_index("item_id").reindex(catalog)
    price = itm["price"].astype(float).to_numpy()
    it = np.zeros((n_items, len(ITEM_FEATURES)), dtype=np.float64)

    def per_item(mask) -> np.ndarray:
        return np.bincount(ev.loc[mask, "i"], minlength=n_items).astype(np.float64)

    last7 = ev["age_days"] < 7
    last30 = ev["age_days"] < 30
    views = per_item(ev["event_type"].isin(["view", "click"]))
    it[:, 0] = per_item(last7)
    it[:, 1] = per_item(last30)
    it[:, 2] = per_item(slice(None))
    it[:, 3] = per_item(last7 & ev["event_type"].isin(targets))
    it[:, 4] = per_item(ev["event_type"] == "cart") / np.maximum(views, 1)
    it[:, 5] = per_item(ev["event_type"] == "purchase") / np.maximum(views, 1)
    it[:, 6] = np.where(np.isnan(price), MISSING, price)
    first_seen = ev.groupby("i")["age_days"].max().reindex(range(n_items)).to_numpy()
    it[:, 7] = np.where(np.isnan(first_seen), 0.0, first_seen)
    it[:, 8] = (it[:, 0] * 30 / 7) / np.maximum(it[:, 1], 1)
    rev_cols = [ITEM_FEATURES.index(f"it_{f}") for f in REVIEW_FEATURES]
    it[:, rev_cols] = review_aggregates(ev, as_of, "i").reindex(range(n_items)).fillna(0.0)[REVIEW_FEATURES].to_numpy()
    # the popularity source: target events in the last candidates.popularity_days, then all-time targets, then events
    recent = ev["age_days"] < float((cfg.get("candidates") or {}).get("popularity_days", 7))
    pop_score = (per_item(recent & ev["event_type"].isin(targets)) * 1e6 + per_item(ev["event_type"].isin(targets)) * 1e2
                 + it[:, 2] * 1e-6)
    pop_order = np.argsort(-pop_score, kind="stable").astype(np.int32)

    cats = itm["category_path"].astype(object)
    item_cat, _ = _codes(cats)
    item_top, _ = _codes(cats.map(lambda c: c.split("/")[0] if isinstance(c, str) and c else None))
    item_brand, _ = _codes(itm["brand"].astype(object))

    covis_ptr, covis_idx, covis_w = _covisitation(ev, n_items, cfg["candidates"])

    # identified users
    uev = ev.loc[ev["user_id"].notna()]
    users = pd.Index(sorted(set(uev["user_id"].astype(str)) | set(map(str, user_ids))))
    uev = uev.assign(u=users.get_indexer(uev["user_id"].astype(str)).astype(np.int64))
    n_users = len(users)
    uf = np.zeros((n_users, len(USER_FEATURES)), dtype=np.float64)
    g = uev.groupby("u")
    idx = g.size().index.to_numpy()
    uf[idx, 0] = g.size().to_numpy()
    uf[idx, 1] = g["i"].nunique().to_numpy()
    uf[idx, 2] = g["session_id"].nunique().to_numpy()
    uf[idx, 3] = g["age_days"].min().to_numpy()
    uf[idx, 4] = g["age_days"].max().to_numpy()
    uarr = uev["u"].to_numpy()
    uf[:, 5] = np.bincount(uarr[(uev["event_type"] == "cart").to_numpy()], minlength=n_users)
    uf[:, 6] = np.bincount(uarr[(uev["event_type"] == "purchase").to_numpy()], minlength=n_users)
    avg_price = uev.assign(p=uev["price"].where(uev["price"] > 0)).groupby("u")["p"].mean()
    uf[:, 7] = MISSING
    uf[avg_price.index.to_numpy(), 7] = avg_price.fillna(MISSING).to_numpy()
    rev_cols = [USER_FEATURES.index(f"u_{f}") for f in REVIEW_FEATURES]
    uf[:, rev_cols] = review_aggregates(uev, as_of, "u").reindex(range(n_users)).fillna(0.0)[REVIEW_FEATURES].to_numpy()

    # last session per user (by its latest event)
    last_session = uev.sort_values("ts").groupby("u")["session_id"].last()
    uev = uev.assign(in_last=(uev["session_id"].to_numpy() == last_session.reindex(uev["u"]).to_numpy()))

    # user x item history, sorted per user by recency of the last interaction
    agg = {"ui_score": ("w", "sum"), "ui_days_since_last": ("age_days", "min"), "ui_in_last_session": ("in_last", "max")}
    pairs = uev.groupby(["u", "i"]).agg(**agg)
    counts = uev.groupby(["u", "i", "event_type"]).size().unstack(fill_value=0)
    for etype, col in _UI_TYPES.items():
        pairs[col] = counts[etype] if etype in counts.columns else 0
    pairs = pairs.reset_index().sort_values(["u", "ui_days_since_last", "i"], kind="stable")
    hist_ptr = _csr(pairs["u"].to_numpy(), n_users)
    hist_item = pairs["i"].to_numpy(np.int32)
    hist_feat = pairs[UI_FEATURES].to_numpy(np.float32)

    # affinities: share of the user's positive decayed weight per category / top category / brand
    pos = uev.assign(wp=uev["w"].clip(lower=0))
    aff = {}
    for name, codes in (("cat", item_cat), ("top", item_top), ("brand", item_brand)):
        t = pos.assign(c=codes[pos["i"].to_numpy()])
        t = t.loc[t["c"] >= 0].groupby(["u", "c"])["wp"].sum().reset_index()
        tot = t.groupby("u")["wp"].transform("sum")
        t["share"] = np.where(tot > 0, t["wp"] / tot.where(tot > 0, 1), 0.0)
        t = t.sort_values(["u", "c"])
        aff[name] = (_csr(t["u"].to_numpy(), n_users), t["c"].to_numpy(np.int32), t["share"].to_numpy(np.float32))

    uvec = np.zeros((n_users, item_matrix.shape[1]), dtype=np.float32)
    if len(user_ids):
        uvec[users.get_indexer([str(u) for u in user_ids])] = user_matrix

    meta = {"n_events": int(len(ev)), "n_users": n_users, "n_items": n_items,
            "item_features": ITEM_FEATURES, "user_features": USER_FEATURES, "ui_features": UI_FEATURES}
    return Snapshot(
        as_of=np.datetime64(as_of), item_ids=np.asarray(catalog, dtype=str),
        item_emb=np.ascontiguousarray(item_matrix, dtype=np.float32), item_feat=it.astype(np.float32),
        item_cat=item_cat, item_top=item_top, item_brand=item_brand, pop_order=pop_order,
        covis_ptr=covis_ptr, covis_idx=covis_idx, covis_w=covis_w,
        user_ids=np.asarray(users, dtype=str), user_feat=uf.astype(np.float32), user_vec=uvec,
        hist_ptr=hist_ptr, hist_item=hist_item, hist_feat=hist_feat,
        cat_ptr=aff["cat"][0], cat_id=aff["cat"][1], cat_w=aff["cat"][2],
        top_ptr=aff["top"][0], top_id=aff["top"][1], top_w=aff["top"][2],
        brand_ptr=aff["brand"][0], brand_id=aff["brand"][1], brand_w=aff["brand"][2],
        meta=meta, **_peer_arrays(ev, n_items, hist_ptr, hist_item, hist_feat, cfg["candidates"]),
    )


def _covisitation(ev: pd.DataFrame, n_items: int, ccfg: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item -> top-K items seen by the same visitor within a time window, weight n_ij/sqrt(n_i n_j)."""
    import duckdb

    actor = ev["user_id"].astype(object).where(ev["user_id"].notna(), "s:" + ev["session_id"].astype(str))
    first = (pd.DataFrame({"a": actor.to_numpy(), "i": ev["i"].to_numpy(), "ts": ev["ts"].to_numpy()})
             .groupby(["a", "i"], as_index=False)["ts"].min())
    hours = float(ccfg["covis_window_hours"])
    top_k = int(ccfg["covis_top_neighbors"])
    con = duckdb.connect()
    try:
        con.register("f", first)
        pairs = con.execute(f"""
            with p as (
              select x.i as i, y.i as j, count(*) as n
              from f x join f y on x.a = y.a and x.i <> y.i
               and abs(epoch(x.ts) - epoch(y.ts)) <= {hours * 3600}
              group by 1, 2),
            c as (select i, count(*) as n from f group by 1),
            s as (select p.i, p.j, p.n / sqrt(ci.n * cj.n) as w
                  from p join c ci on ci.i = p.i join c cj on cj.i = p.j),
            r as (select *, row_number() over (partition by i order by w desc, j) as rk from s)
            select i, j, w from r where rk <= {top_k} order by i, w desc, j
        """).df()
    finally:
        con.close()
    ptr = _csr(pairs["i"].to_numpy(np.int64), n_items)
    return ptr, pairs["j"].to_numpy(np.int32), pairs["w"].to_numpy(np.float32)


def _peer_arrays(ev: pd.DataFrame, n_items: int, hist_ptr: np.ndarray, hist_item: np.ndarray,
                 hist_feat: np.ndarray, ccfg: dict) -> dict:
    """Item-kNN neighbours over whole histories and ALS item factors, both from events before the cutoff.

    Only item-side arrays are stored: a user's ALS vector is folded in from their history at scoring
    time (ml.candidates.als_user_vector), so serving (and online users) need numpy alone.
    """
    out = dict(zip(("knn_ptr", "knn_idx", "knn_w"), _item_knn(ev, n_items, int(ccfg.get("knn_top_neighbors", 100)))))
    factors = int(ccfg.get("als_factors", 0))
    if factors <= 0 or len(hist_item) == 0:
        return out
    import scipy.sparse as sp
    from threadpoolctl import threadpool_limits

    from implicit.cpu.als import AlternatingLeastSquares

    alpha = float(ccfg.get("als_alpha", 1.0))
    reg = float(ccfg.get("als_regularization", 0.1))
    n_users = len(hist_ptr) - 1
    rows = np.repeat(np.arange(n_users), np.diff(hist_ptr))
    conf = (np.clip(hist_feat[:, 6], 0, None) + 1.0) * alpha  # as ml.peers.interaction_matrix, times alpha
    X = sp.csr_matrix((conf.astype(np.float32), (rows, hist_item)), shape=(n_users, n_items))
    with threadpool_limits(1):
        model = AlternatingLeastSquares(factors=factors, regularization=reg,
                                        iterations=int(ccfg.get("als_iterations", 15)),
                                        random_state=int(ccfg.get("als_seed", 0)), num_threads=1)
        model.fit(X, show_progress=False)
    Y = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    out["als_item"] = Y
    out["als_gram"] = (Y.T.astype(np.float64) @ Y + reg * np.eye(Y.shape[1])).astype(np.float32)
    out["als_alpha"] = np.array([alpha], dtype=np.float32)
    return out


def _item_knn(ev: pd.DataFrame, n_items: int, top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item -> top-K items touched by the same visitor at any time (cosine n_ij / sqrt(n_i n_j)).

    Unlike co-visitation (a time window), this links items across a visitor's whole history: the
    signal for shops where the same customer buys related items weeks apart.
    """
    import scipy.sparse as sp

    actor = ev["user_id"].astype(object).where(ev["user_id"].notna(), "s:" + ev["session_id"].astype(str))
    a_codes, _ = pd.factorize(actor)
    pairs = pd.DataFrame({"a": a_codes, "i": ev["i"].to_numpy()}).drop_duplicates()
    B = sp.csr_matrix((np.ones(len(pairs), np.float32), (pairs["a"].to_numpy(), pairs["i"].to_numpy())),
                      shape=(int(a_codes.max(initial=-1)) + 1, n_items))
    n = np.asarray(B.sum(axis=0)).ravel().astype(np.float64)
    C = (B.T @ B).tocoo()
    keep = C.row != C.col
    r, c, v = C.row[keep], C.col[keep], C.data[keep].astype(np.float64)
    w = v / np.sqrt(n[r] * n[c])
    order = np.lexsort((c, -w, r))
    r, c, w = r[order].astype(np.int64), c[order], w[order]
    rank = np.arange(len(r)) - _csr(r, n_items)[r]
    keep = rank < top_k
    return _csr(r[keep], n_items), c[keep].astype(np.int32), w[keep].astype(np.float32)

