"""One loaded model version and everything a request computes from it (numpy + onnxruntime + faiss only).

A `ModelBundle` is immutable once built; the app swaps the whole object when a new version is
promoted, so a request that started on the old version finishes on it. Recommendations use the
same candidates (`ml.candidates`) and features (`ml.features`) as training, scored by the ONNX
ranker, so served top-k equals the offline ranker's.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ml.candidates import SOURCES, Candidates, generate, user_scores
from ml.features import FEATURES, build_features
from ml.onnx_export import OnnxScorer
from ml.onnx_encoder import OnnxTextEncoder
from ml.snapshot import Snapshot
from serving.online import OnlineEvent, OnlineStore, catalog_prices, user_view

log = logging.getLogger("persona.serving")

_TOKEN = re.compile(r"[a-z0-9]+")
_PURCHASES = FEATURES.index("ui_n_purchase")
EXPLAIN_TOP = 3


class ModelVersionError(RuntimeError):
    pass


class UnknownId(LookupError):
    """An id the model version does not know; the API answers 404 with this message."""


@dataclass
class Ranked:
    items: list[str]
    scores: list[float]
    strategy: str
    explanations: list[dict] | None = None
    n_candidates: int = 0
    extra: dict = field(default_factory=dict)


def tokens(text: str) -> set[str]:
    return set(_TOKEN.findall(text.lower()))


def leaf_category(path: str | None) -> str | None:
    if not path:
        return None
    parts = [p.strip() for p in str(path).split("/") if p.strip()]
    return parts[-1] if parts else None


class ModelBundle:
    """Ranker, serving snapshot, catalog, batch profiles, text encoder and a faiss index of one version."""

    def __init__(self, version_dir: str | Path, cfg: dict, providers: list[str] | None = None):
        import logging

        logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its "no AVX512 build" note is not an error
        import faiss

        self.version_dir = Path(version_dir)
        self.version = self.version_dir.name
        self.cfg = cfg
        self.per_source = cfg["candidates"]
        self.event_weights = cfg["profiles"]["event_weights"]
        search = cfg["serving"]["search"]
        self.semantic_candidates = int(search["semantic_candidates"])
        self.lexical_weight = float(search["lexical_weight"])
        self.personal_weight = float(search["personal_weight"])
        need = ["features.json", "ranker.onnx", "snapshot", "catalog.json", "profiles.json", "encoder", "manifest.json"]
        missing = [n for n in need if not (self.version_dir / n).exists()]
        if missing:
            raise ModelVersionError(f"{self.version_dir}: missing {missing}; this version predates the serving "
                                    "files: run `persona run` to build a new one")
        if json.loads((self.version_dir / "features.json").read_text()) != FEATURES:
            raise ModelVersionError(f"{self.version_dir}: its feature list differs from this code's; retrain")
        self.manifest = json.loads((self.version_dir / "manifest.json").read_text())
        self.snapshot = Snapshot.load(self.version_dir / "snapshot")
        self.as_of = self.snapshot.as_of
        self.scorer = OnnxScorer(self.version_dir / "ranker.onnx", providers=providers)
        self.encoder = OnnxTextEncoder(self.version_dir / "encoder", providers=providers)
        self.embed_query = lru_cache(maxsize=4096)(lambda q: self.encoder.encode([q])[0])
        catalog = json.loads((self.version_dir / "catalog.json").read_text())
        self.profiles = json.loads((self.version_dir / "profiles.json").read_text())
        snap = self.snapshot
        self.items = [catalog.get(str(i), {}) for i in snap.item_ids]
        self.titles = [it.get("title") or "" for it in self.items]
        self.item_tokens = [tokens(" ".join(filter(None, [it.get("title"), (it.get("category_path") or "").replace("/", " "),
                                                            it.get("brand")]))) for it in self.items]
        self.category_names: dict[int, str] = {}
        for code, it in zip(snap.item_cat, self.items):
            if code >= 0 and it.get("category_path"):
                self.category_names.setdefault(int(code), it["category_path"])
        self.prices = catalog_prices(snap)
        self.index = faiss.IndexFlatIP(snap.item_emb.shape[1])
        self.index.add(np.ascontiguousarray(snap.item_emb, dtype=np.float32))
        log.info("loaded %s: ranker providers %s, encoder providers %s, %d users, %d items",
                 self.version, self.scorer.providers, self.encoder.providers, len(snap.user_ids), snap.n_items)

    # -- state of one user -------------------------------------------------------------------------
    def user_state(self, user_id: str, online: OnlineStore | None):
        """(snapshot-like, index) for a known or online user, None for a cold-start user."""
        snap = self.snapshot
        u = snap.user_index.get(user_id)
        events = online.events(user_id, since=self.as_of) if online is not None else []
        if events:
            return user_view(snap, u, events, self.event_weights, self.prices), 0, True
        if u is None:
            return None, None, False
        return snap, u, False

    def knows_item(self, item_id: str) -> bool:
        return item_id in self.snapshot.item_index

    # -- recommendations ---------------------------------------------------------------------------
    def recommend(self, user_id: str, k: int, online: OnlineStore | None = None, exclude_purchased: bool = False,
                  explain: bool = False) -> Ranked:
        snap, u, is_online = self.user_state(user_id, online)
        if snap is None:
            pop = self.snapshot.pop_order[:k]
            expl = [{"sources": ["popularity"], "top_features": [], "reason": "unknown user: most popular items"}
                    for _ in pop] if explain else None
            # a descending score so clients can sort/merge: the popularity rank, negated
            return Ranked([str(self.snapshot.item_ids[i]) for i in pop], [float(-r) for r in range(len(pop))],
                          "fallback", expl, len(pop))
        cand = generate(snap, u, self.per_source)
        X = build_features(snap, u, cand)
        scores = self.scorer(X)
        keep = np.ones(len(scores), dtype=bool)
        if exclude_purchased:
            keep = X[:, _PURCHASES] <= 0
        idx = np.flatnonzero(keep)
        order = idx[np.lexsort((cand.items[idx], -scores[idx]))][:k]
        expl = self._explain(X, scores, order, cand.sources) if explain else None
        return Ranked([str(snap.item_ids[i]) for i in cand.items[order]], [float(s) for s in scores[order]],
                      "ranker_online" if is_online else "ranker", expl, len(cand.items))

    def _explain(self, X: np.ndarray, scores: np.ndarray, rows: np.ndarray, sources: np.ndarray | None,
                 extra: list[dict] | None = None) -> list[dict]:
        """Per item: its candidate sources and the features whose replacement by the candidate-set median
        moves its ONNX score most (occlusion, one batched ONNX call): why it beats the other candidates."""
        out = []
        if len(rows) == 0:
            return out
        base = np.median(X, axis=0).astype(np.float32)
        Xk = X[rows]
        n, f = Xk.shape
        occl = np.repeat(Xk, f, axis=0)
        occl[np.arange(n * f), np.tile(np.arange(f), n)] = np.repeat(base[None, :], n, axis=0).reshape(-1)
        deltas = (scores[rows][:, None] - self.scorer(occl).reshape(n, f))
        for j, r in enumerate(rows):
            top = np.argsort(-np.abs(deltas[j]), kind="stable")[:EXPLAIN_TOP]
            item = {"sources": [s for s, on in zip(SOURCES, sources[r]) if on] if sources is not None else [],
                    "top_features": [{"feature": FEATURES[t], "value": float(Xk[j, t]),
                                      "contribution": float(deltas[j, t])} for t in top if deltas[j, t] != 0]}
            if extra is not None:
                item.update(extra[j])
            out.append(item)
        return out

    # -- search ------------------------------------------------------------------------------------
    def search(self, user_id: str | None, q: str, k: int, online: OnlineStore | None = None,
               explain: bool = False, personal_weight: float | None = None) -> Ranked:
        """Semantic (faiss over item embeddings) + lexical candidates, ranked by query relevance plus,
        for a known user, the ranker's min-max-normalised score for that user (the profile features)."""
        snap0 = self.snapshot
        qv = self.embed_query(q)
        n_sem = min(self.semantic_candidates, snap0.n_items)
        _, idx = self.index.search(qv[None, :], n_sem)
        qsim = snap0.item_emb @ qv
        qt = tokens(q)
        lex = np.array([len(qt & t) / len(qt) if qt else 0.0 for t in self.item_tokens], dtype=np.float32)
        semantic = np.zeros(snap0.n_items, dtype=bool)
        semantic[idx[0][idx[0] >= 0]] = True
        items = np.flatnonzero(semantic | (lex > 0)).astype(np.int32)
        rel = qsim[items] + self.lexical_weight * lex[items]
        snap, u, is_online = self.user_state(user_id, online) if user_id else (None, None, False)
        w = self.personal_weight if personal_weight is None else personal_weight
        personal = np.zeros(len(items), dtype=np.float64)
        X = sources = scores = None
        if snap is not None and w > 0 and len(items):
            cand = self._as_candidates(snap, u, items)
            X = build_features(snap, u, cand)
            scores = self.scorer(X)
            lo, hi = scores.min(), scores.max()
            personal = (scores - lo) / (hi - lo) if hi > lo else np.zeros_like(scores)
            sources = cand.sources
        final = rel + w * personal
        order = np.lexsort((items, -final))[:k]
        strategy = ("personalized_online" if is_online else "personalized") if X is not None else "query_only"
        expl = None
        if explain:
            extra = [{"semantic": bool(semantic[items[r]]), "lexical": bool(lex[items[r]] > 0),
                      "query_similarity": float(qsim[items[r]]), "lexical_match": float(lex[items[r]]),
                      "personal_score": float(personal[r])} for r in order]
            if X is not None:
                expl = self._explain(X, scores, order, sources, extra)
            else:
                expl = [dict(e, sources=[], top_features=[]) for e in extra]
            for e in expl:
                e["sources"] = [s for s in ("semantic", "lexical") if e.pop(s)] + [f"profile:{s}" for s in e["sources"]]
        return Ranked([str(snap0.item_ids[i]) for i in items[order]], [float(s) for s in final[order]],
                      strategy, expl, len(items))

    def _as_candidates(self, snap, u: int, items: np.ndarray) -> Candidates:
        """Search hits as ranker candidates, with the source flags the user's own candidate set gives them."""
        own = generate(snap, u, self.per_source)
        flags = np.zeros((snap.n_items, len(SOURCES)), dtype=bool)
        flags[own.items] = own.sources
        return Candidates(items, flags[items], own.scores if own.scores is not None else user_scores(snap, u))

    # -- similar items -----------------------------------------------------------------------------
    def similar(self, item_id: str, k: int, explain: bool = False) -> Ranked:
        """Co-visitation weight plus content cosine: items without events are still reachable by content."""
        snap = self.snapshot
        i = snap.item_index.get(item_id)
        if i is None:
            raise UnknownId(f"unknown item_id {item_id!r}: not in model version {self.version}'s catalog")
        n_sem = min(self.semantic_candidates, snap.n_items)
        _, idx = self.index.search(snap.item_emb[i:i + 1], n_sem)
        nb, w = snap.neighbors(i)
        covis = np.zeros(snap.n_items, dtype=np.float32)
        covis[nb] = w
        content = snap.item_emb @ snap.item_emb[i]
        pool = np.zeros(snap.n_items, dtype=bool)
        pool[idx[0][idx[0] >= 0]] = True
        pool[nb] = True
        pool[i] = False
        items = np.flatnonzero(pool).astype(np.int32)
        score = content[items] + covis[items]
        order = np.lexsort((items, -score))[:k]
        expl = None
        if explain:
            expl = [{"sources": [s for s, on in (("covisitation", covis[items[r]] > 0), ("content", True)) if on],
                     "covisitation": float(covis[items[r]]), "content_similarity": float(content[items[r]])}
                    for r in order]
        return Ranked([str(snap.item_ids[j]) for j in items[order]], [float(s) for s in score[order]],
                      "covisitation+content" if len(nb) else "content", expl, len(items))

    # -- profile -----------------------------------------------------------------------------------
    def profile(self, user_id: str, online: OnlineStore | None = None, n_interests: int = 5) -> dict:
        """Batch profile (segment, tags) plus live interests and recent items, which include posted events."""
        snap, u, is_online = self.user_state(user_id, online)
        batch = self.profiles.get(user_id)
        if snap is None and batch is None:
            raise UnknownId(f"unknown user_id {user_id!r}: no profile in model version {self.version} "
                            "and no events posted since")
        interests, recent = [], []
        if snap is not None:
            s, e = snap.cat_ptr[u], snap.cat_ptr[u + 1]
            pairs = sorted(zip(snap.cat_w[s:e].tolist(), snap.cat_id[s:e].tolist()), key=lambda p: (-p[0], p[1]))
            interests = [{"category": self.category_names.get(int(c), str(c)), "share": round(float(w), 4)}
                         for w, c in pairs[:n_interests] if w > 0]
            hist_items, _ = snap.history(u)
            recent = [str(snap.item_ids[i]) for i in hist_items[:10]]
        batch = batch or {}
        return {"user_id": user_id, "model_version": self.version,
                "strategy": "online" if is_online else ("batch" if batch else "snapshot"),
                "segment": batch.get("segment"), "tags": batch.get("tags", []), "interests": interests,
                "recent_items": recent, "online_events": len(online.events(user_id, self.as_of)) if online else 0,
                **{k: batch.get(k) for k in ("top_categories", "top_brands", "price_band", "activity_level",
                                             "lifecycle_stage", "purchase_intent", "batch_interests")}}

    def item_payload(self, item_id: str, score: float) -> dict:
        it = self.items[self.snapshot.item_index[item_id]]
        return {"item_id": item_id, "title": it.get("title") or "", "category": it.get("category_path"),
                "score": score}

    def validate_event(self, event: OnlineEvent) -> None:
        if event.item_id not in self.snapshot.item_index:
            raise UnknownId(f"unknown item_id {event.item_id!r}: not in model version {self.version}'s catalog")
