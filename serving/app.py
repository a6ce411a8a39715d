"""FastAPI app: `GET /v1/recommendations`, `GET /health`.

Loads the champion version from the registry at start-up (`persona serve`, or
`uvicorn serving.app:create_app --factory`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel

from ml import registry
from persona.config import load_settings
from serving.recommender import Recommender

log = logging.getLogger("persona.serving")


class Item(BaseModel):
    item_id: str
    title: str
    score: float


class RecommendationsResponse(BaseModel):
    user_id: str
    strategy: str
    model_version: str
    items: list[Item]


def create_app(models_dir: str | Path | None = None) -> FastAPI:
    settings = load_settings()
    models_dir = Path(models_dir) if models_dir else settings.models_dir
    try:
        recommender = Recommender(registry.champion_dir(models_dir), settings["candidates"])
    except registry.RegistryError as exc:
        raise SystemExit(f"persona serve: {exc}") from None
    log.info("serving %s with providers %s", recommender.version, recommender.providers)
    app = FastAPI(title="Persona", version="1", description="Personalized recommendations from the promoted model.")
    app.state.recommender = recommender

    @app.get("/health")
    def health() -> dict:
        r = app.state.recommender
        return {"status": "ok", "model_version": r.version, "providers": r.providers,
                "users": len(r.snapshot.user_ids), "items": r.snapshot.n_items}

    @app.get("/v1/recommendations", response_model=RecommendationsResponse)
    def recommendations(user_id: str = Query(..., min_length=1, max_length=256),
                        k: int = Query(10, ge=1, le=100)) -> RecommendationsResponse:
        r = app.state.recommender
        if not user_id.strip():
            raise HTTPException(status_code=422, detail="user_id must not be blank")
        rec = r.recommend(user_id, k)
        return RecommendationsResponse(
            user_id=user_id, strategy=rec.strategy, model_version=r.version,
            items=[Item(item_id=i, title=r.titles.get(i, ""), score=s) for i, s in zip(rec.items, rec.scores)])

    return app
