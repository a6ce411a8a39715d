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
