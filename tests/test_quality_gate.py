"""A failing blocking check stops what depends on it, writes an alert, and `persona run` says why."""

import json

import pytest

from persona.cli import main
from tests.conftest import ga_slice, write_config


@pytest.mark.slow
def test_quarantine_threshold_breach_stops_dbt_and_alerts(tmp_path, monkeypatch, capsys):
    source = ga_slice(tmp_path / "data" / "slice.parquet", 0.1)
    config = write_config(tmp_path, source, quality__max_quarantine_rate=0.0)  # the slice holds duplicates
    for var in ("DAGSTER_HOME", "PERSONA_WAREHOUSE_PATH", "PERSONA_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PERSONA_CONFIG", str(config))
    code = main(["--config", str(config), "run", "--log-level", "WARNING"])
    err = capsys.readouterr().err
    assert code == 1
    assert "quarantine_rate" in err and "alerts.jsonl" in err
    alerts = [json.loads(line) for line in (tmp_path / "artifacts" / "alerts.jsonl").read_text().splitlines()]
    assert [a["check"] for a in alerts] == ["quarantine_rate"]
    assert alerts[0]["counts"]["quarantined"] > 0 and alerts[0]["samples"][0]["reason"] == "duplicate_row"
    # downstream of the failed blocking check nothing ran: raw tables exist, marts do not
    import duckdb

    con = duckdb.connect(str(tmp_path / "warehouse" / "persona.duckdb"), read_only=True)
    tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
    con.close()
    assert {"raw_events", "raw_items", "quarantine_events"} <= tables
    assert "fct_events" not in tables and "user_profiles" not in tables
    assert not (tmp_path / "models").exists()


def _run_to_embeddings(tmp_path, monkeypatch, **overrides):
    """A real Dagster run of ingest -> dbt marts (+ their GE checks) -> item_embeddings on a 5% slice."""
    from dagster import AssetKey, DagsterInstance

    from orchestration.assets.dbt import persona_dbt_assets

    source = ga_slice(tmp_path / "data" / "slice.parquet", 0.05)
    config = write_config(tmp_path, source, quality__max_quarantine_rate=1.0, **overrides)
    for var in ("DAGSTER_HOME", "PERSONA_WAREHOUSE_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PERSONA_CONFIG", str(config))
    from orchestration.definitions import defs
    from persona.config import load_settings

    settings = load_settings(config)
    monkeypatch.setenv("PERSONA_WAREHOUSE_PATH", str(settings.warehouse_path))
    selection = [AssetKey("raw_events"), AssetKey("raw_items"), AssetKey("quarantine_events"),
                 *persona_dbt_assets.keys, AssetKey("item_embeddings")]
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("persona_full").execute_in_process(
            instance=instance, asset_selection=selection, raise_on_error=False)
    checks = {e.event_specific_data.asset_check_key.name: e.event_specific_data
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    materialized = {e.asset_key.to_user_string() for e in result.all_events
                    if e.event_type_value == "ASSET_MATERIALIZATION"}
    path = tmp_path / "artifacts" / "alerts.jsonl"
    alerts = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return result, checks, materialized, alerts


@pytest.mark.slow
def test_mart_warn_check_failure_alerts_warn_and_lets_downstream_materialize(tmp_path, monkeypatch):
    from dagster import AssetCheckSeverity

    # every item on the slice costs more than 1 USD: dim_items' (and fct_events') price ceiling fails
    result, checks, materialized, alerts = _run_to_embeddings(tmp_path, monkeypatch, quality__marts__max_price=1)
    assert result.success
    warn = checks["dim_items_plausibility"]
    assert warn.passed is False and warn.severity == AssetCheckSeverity.WARN
    table = warn.metadata["results"].value
    assert "expect_column_values_to_be_between | price" in table and "**no**" in table
    assert checks["dim_items_contract"].passed is True and checks["fct_events_contract"].passed is True
    assert "item_embeddings" in materialized                         # downstream of dim_items still ran
    by_check = {a["check"]: a for a in alerts}
    assert set(by_check) == {"dim_items_plausibility", "fct_events_plausibility"}
    assert {a["severity"] for a in alerts} == {"warn"}
    failed = by_check["dim_items_plausibility"]["samples"][0]
    assert failed["column"] == "price" and failed["kwargs"]["max_value"] == 1.0    # the limit in force
    import duckdb

    con = duckdb.connect(str(tmp_path / "warehouse" / "persona.duckdb"), read_only=True)
    over = con.execute("select count(*) from dim_items where price > 1").fetchone()[0]
    con.close()
    assert failed["unexpected_count"] == over > 0


@pytest.mark.slow
def test_mart_blocking_check_failure_stops_downstream_and_alerts_error(tmp_path, monkeypatch):
    from dagster import AssetCheckSeverity

    result, checks, materialized, alerts = _run_to_embeddings(tmp_path, monkeypatch,
                                                              quality__marts__min_rows=10 ** 9)
    assert not result.success
    contract = checks["dim_items_contract"]
    assert contract.passed is False and contract.severity == AssetCheckSeverity.ERROR
    assert "expect_table_row_count_to_be_between" in contract.metadata["results"].value
    assert {"raw_events", "fct_events", "dim_items"} <= materialized  # the marts were built, then judged
    assert "item_embeddings" not in materialized                      # ... and nothing downstream ran
    errors = {a["check"] for a in alerts if a["severity"] == "error"}
    assert {"fct_events_contract", "fct_sessions_contract", "fct_user_item_interactions_contract",
            "dim_users_contract", "dim_items_contract"} <= errors
    assert not any(a["severity"] == "warn" for a in alerts)
