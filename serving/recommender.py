"""Recommendations from one model version: the same candidates and features as training, scored by ONNX."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.candidates import generate
from ml.features import FEATURES, build_features
from ml.onnx_export import OnnxScorer
from ml.snapshot import Snapshot


class ModelVersionError(RuntimeError):
    pass


@dataclass
class Recommendation:
    items: list[str]
    scores: list[float]
    strategy: str


class Recommender:
    def __init__(self, version_dir: str | Path, per_source: dict[str, int] | None = None):
        self.version_dir = Path(version_dir)
        self.version = self.version_dir.name
        features = json.loads((self.version_dir / "features.json").read_text())
        if features != FEATURES:
            raise ModelVersionError(f"{self.version_dir}: its feature list differs from this code's; retrain")
        self.snapshot = Snapshot.load(self.version_dir / "snapshot")
        self.scorer = OnnxScorer(self.version_dir / "ranker.onnx")
        self.titles = json.loads((self.version_dir / "items.json").read_text())
        self.per_source = per_source or {}
        self.manifest = json.loads((self.version_dir / "manifest.json").read_text())

    @property
    def providers(self) -> list[str]:
        return self.scorer.providers

    def recommend(self, user_id: str, k: int) -> Recommendation:
        snap = self.snapshot
        u = snap.user_index.get(str(user_id))
        if u is None:
            pop = snap.pop_order[:k]
            # a descending score so clients can sort/merge: the popularity rank, negated
            return Recommendation([str(snap.item_ids[i]) for i in pop], [float(-r) for r in range(len(pop))], "fallback")
        cand = generate(snap, u, self.per_source)
        X = build_features(snap, u, cand)
        scores = self.scorer(X)
        order = np.lexsort((cand.items, -scores))[:k]
        return Recommendation([str(snap.item_ids[i]) for i in cand.items[order]],
                              [float(s) for s in scores[order]], "ranker")
