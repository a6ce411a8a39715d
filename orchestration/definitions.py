"""Assembles the Persona code location: assets, checks, resources, jobs, schedules and sensors."""

import sys
from pathlib import Path

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules
from dagster_dbt import DbtCliResource

from orchestration import checks
from orchestration.assets import dbt, ingest, monitoring, profiles, ranking, refinement, reviews
from orchestration.dbt_project import dbt_project
from orchestration.jobs import drift_check_job, full_job, retrain_job
from orchestration.resources import PersonaConfig, Warehouse
from orchestration.schedules import daily_full, hourly_drift
from orchestration.inbox import inbox_sensor
from orchestration.sensors import drift_retrain_sensor

_modules = [ingest, dbt, profiles, ranking, monitoring, reviews, refinement]

defs = Definitions(
    assets=load_assets_from_modules(_modules),
    asset_checks=load_asset_checks_from_modules([checks, ranking]),
    jobs=[full_job, retrain_job, drift_check_job],
    schedules=[daily_full, hourly_drift],
    sensors=[drift_retrain_sensor, inbox_sensor],
    resources={
        "persona": PersonaConfig(),
        "warehouse": Warehouse(),
        # the venv's dbt, found without relying on PATH (a fresh shell may not have .venv/bin on it)
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=str(Path(sys.executable).parent / "dbt")),
    },
)
