"""Behaviour tables: the dbt project (staging over the raw tables, marts for entities)."""

import json
import os

from dagster import AssetExecutionContext
from dagster_dbt import DbtCliResource, dbt_assets

from orchestration.dbt_project import dbt_project
from orchestration.resources import PersonaConfig


def dbt_vars(settings) -> dict:
    p = settings["profiles"]
    return {"half_life_days": p["half_life_days"], "event_weights": p["event_weights"],
            "covis_window_hours": settings["candidates"]["covis_window_hours"]}


@dbt_assets(manifest=dbt_project.manifest_path, project=dbt_project)
def persona_dbt_assets(context: AssetExecutionContext, dbt: DbtCliResource, persona: PersonaConfig):
    """dbt build: models and their tests (tests show as asset checks in the UI)."""
    settings = persona.settings()
    os.environ["PERSONA_WAREHOUSE_PATH"] = str(settings.warehouse_path)
    yield from dbt.cli(["build", "--vars", json.dumps(dbt_vars(settings))], context=context).stream()
