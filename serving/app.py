"""FastAPI app over the promoted model: recommendations, personalized search, profiles, similar items, events.

Start with `persona serve` (or `uvicorn serving.app:create_app --factory`); OpenAPI at `/docs`.
The request path imports onnxruntime, numpy and faiss only (no torch, LightGBM or Dagster).
The champion pointer is polled; a newly promoted version is loaded beside the old one and swapped
in with one reference assignment, so in-flight requests finish on the version they started with
and no request fails during a swap.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from ml import registry
from data_contracts.privacy import PrivacyError, Pseudonymizer
from persona.config import Settings, load_settings
from serving.bundle import ModelBundle, ModelVersionError, Ranked, UnknownId
from serving.metrics import Metrics, PredictionLog
from serving.online import EventInbox, OnlineEvent, OnlineStore

log = logging.getLogger("persona.serving")

EVENT_TYPES = Literal["view", "click", "cart", "remove_from_cart", "checkout", "purchase", "return", "review"]
MAX_K = 100


# ---- response/request models (OpenAPI) -------------------------------------------------------------
class Item(BaseModel):
    item_id: str
    title: str
    category: str | None = None
    score: float
    explanation: dict | None = Field(None, description="with explain=true: candidate sources and top features")


class RankedResponse(BaseModel):
    strategy: str = Field(description="what served it: ranker, ranker_online, fallback (popular), personalized, "
                                      "personalized_online, query_only, covisitation+content, content")
    model_version: str
    n_candidates: int
    items: list[Item]


class RecommendationsResponse(RankedResponse):
    user_id: str


class SearchResponse(RankedResponse):
    user_id: str | None
    q: str


class SimilarResponse(RankedResponse):
    item_id: str


class ProfileResponse(BaseModel):
    user_id: str
    model_version: str
    strategy: str = Field(description="batch (nightly profile), online (includes posted events), snapshot")
    segment: int | None
    tags: list[str]
    interests: list[dict]
    recent_items: list[str]
    online_events: int
    top_categories: list[str] | None = None
    top_brands: list[str] | None = None
    price_band: str | None = None
    activity_level: str | None = None
    lifecycle_stage: str | None = None
    purchase_intent: bool | None = None
    batch_interests: list[dict] | None = Field(None, description="the nightly profile's interests (user_interests "
                                                                  "table): one per category cluster, label and weight")


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=256, pattern=r"\S")
    item_id: str = Field(min_length=1, max_length=256, pattern=r"\S")
    event_type: EVENT_TYPES
    session_id: str | None = Field(None, min_length=1, max_length=256)
    price: float | None = Field(None, ge=0, le=1e7)


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1, max_length=500)


class EventsResponse(BaseModel):
    accepted: int
    users: list[str]
    model_version: str


# ---- state -------------------------------------------------------------------------------------------
class ServingState:
    """The bundle being served, the online store and the inbox, and the watcher that swaps bundles."""

    def __init__(self, settings: Settings, models_dir: Path):
        self.settings = settings
        self.cfg = settings["serving"]
        self.models_dir = models_dir
        self.metrics = Metrics()
        self.providers = list(self.cfg["providers"]) if self.cfg.get("providers") else None
        # raw shop ids at the door -> the ids the warehouse and the model hold (privacy.pseudonymize)
        self.pseudo = Pseudonymizer.from_settings(settings, create=False)
        self.inbox = EventInbox(settings.path(self.cfg["inbox"]))
        self.online = OnlineStore([self.stored_event(e) for e in self.inbox.read()])
        self.predictions = PredictionLog(settings.path(self.cfg["prediction_log"]),
                                         float(self.cfg["prediction_log_sample_rate"]))
        self.bundle = self._load(registry.champion_dir(models_dir))
        self._refused: str | None = None  # the last promoted version that failed to load
        self.metrics.set_model(self.bundle.version)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def stored_id(self, raw: str | None) -> str | None:
        """The id the model knows for a shop's raw user id (its keyed hash when pseudonymization is on).

        An id that is itself a stored pseudonym (copied from the warehouse) is refused with 422 rather than
        served as an unknown user: hashing it again would silently give everyone the cold-start fallback.
        """
        stored = self.pseudo.user_id(raw)
        if self.pseudo.enabled and raw is not None:
            known = self.bundle.snapshot.user_index
            if stored not in known and raw in known:
                raise HTTPException(status_code=422, detail=(
                    f"user_id {raw!r} is a warehouse pseudonym, not a shop user id: /v1 takes the shop's raw ids "
                    "and applies the keyed hash itself (docs/serving.md, 'User ids')"))
        return stored

    def stored_event(self, e: OnlineEvent) -> OnlineEvent:
        """An inbox event (raw ids, as the shop sent them) as the online store keys it."""
        if not self.pseudo.enabled:
            return e
        return replace(e, user_id=self.pseudo.user_id(e.user_id), session_id=self.pseudo.session_id(e.session_id))

    def _load(self, version_dir: Path) -> ModelBundle:
        made_under = registry.pseudonym_key(version_dir)  # checked before the sessions and index are built
        if made_under not in (None, "off") and not self.pseudo.enabled:
            log.warning("model %s holds pseudonymized user ids and privacy.pseudonymize is false here: clients "
                        "must send the stored pseudonyms", Path(version_dir).name)
        elif made_under is not None and self.pseudo.enabled and made_under != self.pseudo.fingerprint:
            raise ModelVersionError(
                f"model {Path(version_dir).name} holds user ids pseudonymized with another key (fingerprint "
                f"{made_under}) than serving's ({self.pseudo.fingerprint}, {self.pseudo.describe()}): every user "
                "would look unknown. Serve with the key the warehouse was built with ($PERSONA_PSEUDONYM_KEY or "
                "privacy.key_file), or retrain under this one.")
        return ModelBundle(version_dir, self.settings.data, providers=self.providers)

    def check_for_new_version(self) -> bool:
        """Load and swap in the champion if it changed; a version that fails to load leaves the old one serving."""
        version = registry.champion_version(self.models_dir)
        if not version or version in (self.bundle.version, self._refused):
            return False
        try:
            bundle = self._load(registry.champion_dir(self.models_dir))
        except (ModelVersionError, registry.RegistryError, OSError, ValueError, KeyError) as exc:
            self._refused = version  # tried once per promotion, not once per reload interval
            self.metrics.swap_failures.inc()
            log.error("promoted version %s failed to load, still serving %s: %s", version, self.bundle.version, exc)
            return False
        old, self.bundle = self.bundle, bundle  # one reference assignment: atomic for readers
        self.metrics.swaps.inc()
        self.metrics.set_model(bundle.version)
        log.info("swapped model %s -> %s", old.version, bundle.version)
        return True

    def start(self) -> None:
        interval = float(self.cfg["reload_interval_s"])
        if interval <= 0:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.check_for_new_version()
                except Exception:  # the watcher must survive anything; the current bundle keeps serving
                    log.exception("model watcher")

        self._watcher = threading.Thread(target=loop, name="persona-model-watcher", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        self.predictions.close()


# ---- middleware: timeout + metrics (pure ASGI: no per-request task/threads overhead) ------------------
class TimeoutAndMetrics:
    def __init__(self, app, state_getter, timeout_s: float):
        self.app = app
        self.state = state_getter
        self.timeout = timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500, "started": False}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
            await send(message)

        metrics: Metrics = self.state().metrics
        try:
            await asyncio.wait_for(self.app(scope, receive, send_wrapper), self.timeout)
        except asyncio.TimeoutError:
            metrics.timeouts.inc()
            if not status["started"]:
                body = json.dumps({"detail": f"request timed out after {self.timeout:g} s"}).encode()
                await send({"type": "http.response.start", "status": 504,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                status["code"] = 504
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            metrics.requests.labels(label, scope.get("method", ""), str(status["code"])).inc()
            metrics.latency.labels(label).observe(time.perf_counter() - start)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "body", "path"))
        if e.get("type") == "json_invalid":
            loc = "body"
        got = e.get("input")
        shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {str(got)[:50]!r})"
        parts.append(f"{loc or 'request'}: {e.get('msg')}{shown}")
    return "; ".join(parts) or "invalid request"


def _ranked_body(bundle: ModelBundle, r: Ranked, **head) -> dict:
    items = []
    for n, (i, s) in enumerate(zip(r.items, r.scores)):
        it = bundle.item_payload(i, s)
        if r.explanations is not None:
            it["explanation"] = r.explanations[n]
        items.append(it)
    return {**head, "strategy": r.strategy, "model_version": bundle.version, "n_candidates": r.n_candidates,
            "items": items}


def _not_blank(value: str | None, name: str) -> str | None:
    if value is not None and not value.strip():
        raise HTTPException(status_code=422, detail=f"{name} must not be blank")
    return value.strip() if value is not None else None


# ---- the app -------------------------------------------------------------------------------------------
def create_app(models_dir: str | Path | None = None, settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    models_dir = Path(models_dir) if models_dir else settings.models_dir
    scfg = settings["serving"]
    try:
        state = ServingState(settings, models_dir)
    except (registry.RegistryError, ModelVersionError, PrivacyError) as exc:
        raise SystemExit(f"persona serve: {exc}") from None
    log.info("serving %s (ranker providers %s)", state.bundle.version, state.bundle.scorer.providers)
    max_q = int(scfg["search"]["max_query_chars"])

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start()
        yield
        state.stop()

    app = FastAPI(title="Persona", version="1", lifespan=lifespan,
                  description="Personalized recommendations, search, profiles and live events over the promoted "
                              "ONNX model. Every ranked response names the strategy that served it.")
    app.state.serving = state
    app.add_middleware(TimeoutAndMetrics, state_getter=lambda: state, timeout_s=float(scfg["request_timeout_s"]))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content={"detail": _validation_message(exc)})

    @app.exception_handler(UnknownId)
    async def on_unknown(request: Request, exc: UnknownId):
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                                  description="needed when serving.api_key is set")

    async def require_key(key: str | None = Security(api_key_header)) -> None:  # async: no threadpool hop
        expected = scfg.get("api_key")
        if expected and not hmac.compare_digest((key or "").encode(), str(expected).encode()):
            raise HTTPException(status_code=401, detail="missing or invalid API key: send header X-API-Key",
                                headers={"WWW-Authenticate": "ApiKey"})

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])
    K = Query(10, ge=1, le=MAX_K, description=f"how many items (1..{MAX_K})")
    EXPLAIN = Query(False, description="per item: candidate sources and top contributing features")

    @app.get("/health", tags=["ops"])
    async def health() -> dict:
        """Liveness: the process answers and a model is loaded."""
        b = state.bundle
        return {"status": "ok", "model_version": b.version, "providers": b.scorer.providers,
                "users": len(b.snapshot.user_ids), "items": b.snapshot.n_items}

    @app.get("/ready", tags=["ops"])
    def ready() -> JSONResponse:
        """Readiness: model, text encoder and a writable event inbox."""
        b = state.bundle
        checks = {"model": b is not None, "encoder": b.encoder is not None, "inbox_writable": state.inbox.writable()}
        body = {"ready": all(checks.values()), "checks": checks, "model_version": b.version,
                "ranker_providers": b.scorer.providers, "encoder_providers": b.encoder.providers,
                "online_events": len(state.online)}
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics", tags=["ops"])
    def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @v1.get("/recommendations", response_model=RecommendationsResponse, tags=["recommendations"])
    async def recommendations(user_id: str = Query(..., min_length=1, max_length=256), k: int = K,
                        exclude_purchased: bool = Query(False, description="drop items the user already bought"),
                        explain: bool = EXPLAIN):
        """Top-k for a user: the ranker over the user's candidates (posted events included at once);
        unknown users get the most popular items (strategy `fallback`)."""
        user_id = _not_blank(user_id, "user_id")
        stored = state.stored_id(user_id)
        b = state.bundle
        r = b.recommend(stored, k, state.online, exclude_purchased=exclude_purchased, explain=explain)
        state.metrics.strategy.labels("recommendations", r.strategy).inc()
        state.predictions.maybe_log("recommendations", b.version, r.strategy, stored, r.items, r.scores)
        return JSONResponse(_ranked_body(b, r, user_id=user_id))

    @v1.get("/search", response_model=SearchResponse, tags=["search"])
    def search(q: str = Query(..., min_length=1, max_length=max_q, description=f"query text (1..{max_q} chars)"),
               user_id: str | None = Query(None, min_length=1, max_length=256), k: int = K, explain: bool = EXPLAIN):
        """Personalized search: the query encoded by the ONNX text encoder, candidates from the faiss index
        and lexical match, ranked by query relevance plus the ranker's score for the user (strategy
        `personalized`); without a known user, by the query alone (`query_only`)."""
        q = _not_blank(q, "q")
        user_id = _not_blank(user_id, "user_id")
        stored = state.stored_id(user_id)
        b = state.bundle
        r = b.search(stored, q, k, state.online, explain=explain)
        state.metrics.strategy.labels("search", r.strategy).inc()
        state.predictions.maybe_log("search", b.version, r.strategy, stored, r.items, r.scores, q=q)
        return JSONResponse(_ranked_body(b, r, user_id=user_id, q=q))

    @v1.get("/users/{user_id}/profile", response_model=ProfileResponse, tags=["profiles"])
    async def profile(user_id: str = PathParam(..., min_length=1, max_length=256)):
        """Segment and tags from the batch profile; interests and recent items live (posted events count)."""
        user_id = _not_blank(user_id, "user_id")
        stored = state.stored_id(user_id)
        try:
            body = state.bundle.profile(stored, state.online)
        except UnknownId as exc:  # name the id the caller sent, not its pseudonym
            raise UnknownId(str(exc).replace(repr(stored), repr(user_id))) from None
        return JSONResponse(dict(body, user_id=user_id))

    @v1.get("/items/{item_id}/similar", response_model=SimilarResponse, tags=["items"])
    async def similar(item_id: str = PathParam(..., min_length=1, max_length=256), k: int = K, explain: bool = EXPLAIN):
        """Items seen together with it (co-visitation) and close in content (text embedding): an item
        without events is still reachable by content (strategy `content`)."""
        b = state.bundle
        r = b.similar(item_id, k, explain=explain)
        state.metrics.strategy.labels("similar", r.strategy).inc()
        state.predictions.maybe_log("similar", b.version, r.strategy, None, r.items, r.scores, item_id=item_id)
        return JSONResponse(_ranked_body(b, r, item_id=item_id))

    @v1.post("/events", response_model=EventsResponse, tags=["events"])
    def events(body: EventsIn):
        """Append events durably to the inbox (fsync; the next training run ingests it), then update those
        users' recent items, features and profile vector at once."""
        b = state.bundle
        now = datetime.now(timezone.utc).isoformat()
        out = []
        for e in body.events:
            ev = OnlineEvent(event_id=uuid.uuid4().hex, user_id=e.user_id.strip(), item_id=e.item_id.strip(),
                             event_type=e.event_type, session_id=e.session_id or f"api:{e.user_id.strip()}",
                             ts=now, price=e.price)
            try:
                b.validate_event(ev)  # all or nothing: check every event before writing any
            except UnknownId as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from None
            out.append(ev)
        state.inbox.append(out)  # durable before anyone sees the update; raw ids, like any raw log file
        for ev in out:
            state.online.add(state.stored_event(ev))
            state.metrics.events.labels(ev.event_type).inc()
        return JSONResponse({"accepted": len(out), "users": sorted({e.user_id for e in out}),
                             "model_version": b.version})

    app.include_router(v1)
    return app
