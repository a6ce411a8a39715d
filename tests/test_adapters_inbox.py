"""Inbox: a dropped file is picked up by the sensor and loaded once; re-ingesting it changes no table."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import duckdb
import pytest
import yaml

from tests.conftest import ROOT

REES = ROOT.parent / "shared" / "datasets" / "rees46_ecommerce_sample"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TABLES = ("raw_events", "raw_items", "quarantine_events", "ingest_log")


def _fingerprint(db: Path) -> dict[str, tuple[int, str]]:
    """(row count, content hash of the sorted rows) per table."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for t in TABLES:
            df = con.execute(f'select * from "{t}"').df()
            df = df.sort_values(list(df.columns)).reset_index(drop=True)
            out[t] = (len(df), hashlib.sha256(df.to_csv(index=False).encode()).hexdigest())
        return out
    finally:
        con.close()


def _ingest(config: Path):
    from dagster import materialize

    from orchestration.assets.ingest import ingest_source
    from orchestration.resources import PersonaConfig, Warehouse

    result = materialize([ingest_source], resources={"persona": PersonaConfig(config_file=str(config)),
                                                     "warehouse": Warehouse()})
    assert result.success


def test_inbox_file_is_loaded_once_by_content_hash(tmp_path, monkeypatch):
    from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context

    from orchestration.inbox import inbox_sensor
    from persona.config import load_settings

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    base = tmp_path / "shop_day1.csv"
    lines = (FIXTURES / "shop_events.csv").read_text().splitlines()
    base.write_text("\n".join(lines[:7]) + "\n")                       # day 1: 6 events
    config = tmp_path / "persona.yaml"
    config.write_text(yaml.safe_dump({
        "source": {"adapter": "mapping", "path": str(base), "mapping": str(FIXTURES / "shop_mapping.yaml"),
                   "inbox": str(inbox)},
        "paths": {"warehouse_dir": str(tmp_path / "warehouse")}}))
    monkeypatch.setenv("PERSONA_CONFIG", str(config))
    settings = load_settings(config)
    db = settings.warehouse_path

    with DagsterInstance.ephemeral() as instance:
        def tick():
            return inbox_sensor(build_sensor_context(instance=instance))

        assert isinstance(tick(), SkipReason)                           # empty inbox
        _ingest(config)
        assert _fingerprint(db)["raw_events"][0] == 6

        day2 = inbox / "shop_day2.csv"
        day2.write_text("\n".join([lines[0], *lines[7:]]) + "\n")       # a new day's file: 6 more events
        request = tick()
        assert isinstance(request, RunRequest) and request.job_name in (None, "persona_full")
        assert request.tags["persona/new_files"] == "shop_day2.csv"
        _ingest(config)
        after_first = _fingerprint(db)
        assert after_first["raw_events"][0] == 12 and after_first["ingest_log"][0] == 2
        assert isinstance(tick(), SkipReason)                           # loaded: nothing new

        shutil.copy(day2, inbox / "shop_day2 (copy).csv")              # the same file dropped again
        assert isinstance(tick(), SkipReason)
        _ingest(config)                                                 # even a forced re-ingest ...
        assert _fingerprint(db) == after_first                          # ... changes no table


@pytest.mark.skipif(not REES.is_dir(), reason="shared datasets absent")
def test_inbox_with_a_real_rees46_day(tmp_path, monkeypatch):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = tmp_path / "persona.yaml"
    config.write_text(yaml.safe_dump({
        "source": {"adapter": "rees46_events", "path": str(REES / "2019-Oct_head_17k.csv.gz"), "inbox": str(inbox)},
        "paths": {"warehouse_dir": str(tmp_path / "warehouse")}}))
    monkeypatch.setenv("PERSONA_CONFIG", str(config))
    shutil.copy(REES / "2019-Nov_head_683.csv.gz", inbox)
    _ingest(config)
    from persona.config import load_settings

    db = load_settings(config).warehouse_path
    first = _fingerprint(db)
    assert first["raw_events"][0] == 17_429 + 683 and first["quarantine_events"][0] == 5
    shutil.copy(REES / "2019-Nov_head_683.csv.gz", inbox / "again.csv.gz")
    _ingest(config)
    assert _fingerprint(db) == first


def test_reconciliation_check_catches_a_lost_row(tmp_path, monkeypatch):
    """raw = accepted + quarantined is proven per file against ingest_log; a row lost afterwards fails it."""
    from orchestration.checks import quarantine_rate
    from orchestration.resources import PersonaConfig, Warehouse
    from persona.config import load_settings

    config = tmp_path / "persona.yaml"
    config.write_text(yaml.safe_dump({
        "source": {"adapter": "mapping", "path": str(FIXTURES / "shop_events.csv"),
                   "mapping": str(FIXTURES / "shop_mapping.yaml")},
        "paths": {"warehouse_dir": str(tmp_path / "warehouse"), "artifacts_dir": str(tmp_path / "artifacts")},
        "alerts": {"jsonl": str(tmp_path / "artifacts" / "alerts.jsonl")}}))
    monkeypatch.setenv("PERSONA_CONFIG", str(config))
    _ingest(config)
    resources = {"persona": PersonaConfig(config_file=str(config)), "warehouse": Warehouse()}
    ok = quarantine_rate(**resources)
    assert ok.passed and ok.metadata["rows_in"].value == 12
    con = duckdb.connect(str(load_settings(config).warehouse_path))
    con.execute("delete from raw_events where source_row = 3")
    con.close()
    lost = quarantine_rate(**resources)
    assert not lost.passed
    alert = (tmp_path / "artifacts" / "alerts.jsonl").read_text()
    assert "shop_events.csv: 12 rows in != 11 accepted + 0 quarantined" in alert
