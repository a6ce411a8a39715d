"""Prometheus metrics (own registry per app, so several apps in one process never collide) and the
sampled prediction log that prediction-drift monitoring reads."""

from __future__ import annotations

import json
import random
import threading
from datetime import datetime, timezone
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("persona_http_requests_total", "HTTP requests", ["route", "method", "status"], registry=r)
        self.latency = Histogram("persona_http_request_seconds", "Request latency", ["route"], buckets=BUCKETS,
                                 registry=r)
        self.strategy = Counter("persona_served_total", "Responses by endpoint and serving strategy",
                                ["endpoint", "strategy"], registry=r)
        self.events = Counter("persona_events_total", "Events accepted by POST /v1/events", ["event_type"], registry=r)
        self.swaps = Counter("persona_model_swaps_total", "Model versions swapped in while serving", registry=r)
        self.swap_failures = Counter("persona_model_swap_failures_total",
                                     "Promoted versions that failed to load (the old one kept serving)", registry=r)
        self.timeouts = Counter("persona_request_timeouts_total", "Requests answered 504", registry=r)
        self.model = Gauge("persona_model_info", "The model version being served (value 1)", ["version"], registry=r)

    def set_model(self, version: str) -> None:
        self.model.clear()
        self.model.labels(version=version).set(1)


class PredictionLog:
    """Appends a sampled share of served responses (items and scores) as JSON lines."""

    def __init__(self, path: str | Path, sample_rate: float, seed: int | None = None):
        self.path = Path(path)
        self.rate = float(sample_rate)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._fh = None

    def maybe_log(self, endpoint: str, version: str, strategy: str, user_id: str | None, items: list[str],
                  scores: list[float], **extra) -> bool:
        if self.rate <= 0 or self._rng.random() >= self.rate:
            return False
        row = {"ts": datetime.now(timezone.utc).isoformat(), "endpoint": endpoint, "model_version": version,
               "strategy": strategy, "user_id": user_id, "items": items, "scores": [round(s, 6) for s in scores],
               **extra}
        line = json.dumps(row, separators=(",", ":")) + "\n"
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8", buffering=1)
            self._fh.write(line)
        return True

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
