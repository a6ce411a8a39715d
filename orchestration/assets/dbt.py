"""Behaviour tables: the dbt project (staging over the raw tables, marts for entities).

`fct_events` and `fct_sessions` are incremental models: a run after a new day's file writes only the new
day's events and the sessions they touch. That is exact when the raw tables only grew. Otherwise a full
rebuild is asked for (`--full-refresh`): events that fct_events holds have left raw_events (a source file was
removed), or changed (a file reloaded with other content, a new pseudonymization key: an event moving to
another session would leave its old session stale), or fct_events predates the incremental model.
"""

import json
import os
from pathlib import Path

from dagster import AssetExecutionContext
from dagster_dbt import DbtCliResource, dbt_assets

from orchestration.dbt_project import dbt_project
from orchestration.resources import PersonaConfig


def dbt_vars(settings) -> dict:
    p = settings["profiles"]
    return {"half_life_days": p["half_life_days"], "event_weights": p["event_weights"],
            "covis_window_hours": settings["candidates"]["covis_window_hours"]}


# the stg_events columns fct_sessions is computed from: a change in one of them must reach the session
SESSION_INPUTS = ("user_id", "session_id", "ts", "event_type", "item_id", "quantity", "price")


def full_refresh_reason(warehouse_path: Path) -> str | None:
    """Why the incremental marts must be rebuilt whole, or None when an incremental run is exact."""
    from persona.warehouse import connect

    if not Path(warehouse_path).exists():
        return None
    with connect(warehouse_path, read_only=True) as con:
        tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
        if "fct_events" not in tables or "stg_events" not in tables:
            return None
        columns = {r[0] for r in con.execute(
            "select column_name from information_schema.columns where table_name = 'fct_events'").fetchall()}
        if "loaded_at" not in columns:
            return "fct_events was built before the incremental model (no loaded_at column)"
        changed = " or ".join(f"f.{c} is distinct from s.{c}" for c in SESSION_INPUTS)
        gone, moved = con.execute(
            "select count(*) filter (where s.event_id is null), "
            f"count(*) filter (where s.event_id is not null and ({changed})) "
            "from fct_events f left join stg_events s on s.event_id = f.event_id").fetchone()
    if gone:
        return f"{gone:,} events of fct_events are no longer in raw_events"
    if moved:
        return f"{moved:,} events of fct_events changed in raw_events"
    return None


@dbt_assets(manifest=dbt_project.manifest_path, project=dbt_project)
def persona_dbt_assets(context: AssetExecutionContext, dbt: DbtCliResource, persona: PersonaConfig):
    """dbt build: models and their tests (tests show as asset checks in the UI); incremental marts
    are extended, or rebuilt whole when `full_refresh_reason` says so."""
    settings = persona.settings()
    os.environ["PERSONA_WAREHOUSE_PATH"] = str(settings.warehouse_path)
    args = ["build", "--vars", json.dumps(dbt_vars(settings))]
    reason = full_refresh_reason(settings.warehouse_path)
    if reason:
        context.log.info(f"dbt --full-refresh: {reason}")
        args.append("--full-refresh")
    yield from dbt.cli(args, context=context).stream()
