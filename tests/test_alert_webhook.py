"""In a real Dagster run, a failing blocking check stops everything downstream and its alert reaches a
Slack-compatible webhook receiver listening on 127.0.0.1 (plus the JSONL log)."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import ga_slice, write_config


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                    "body": json.loads(body)})
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def webhook():
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/persona", _Receiver.received
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_blocking_check_failure_stops_downstream_and_alerts_the_webhook(tmp_path, monkeypatch, webhook):
    from dagster import DagsterInstance

    url, received = webhook
    source = ga_slice(tmp_path / "data" / "slice.parquet", 0.1)   # holds 100 duplicate rows
    # the per-source threshold (0 for this source) overrides the default 5%: the slice's duplicates breach it
    config = write_config(tmp_path, source, alerts__webhook_url=url,
                          quality__max_quarantine_rate_by_source={"ga_merch_product_events": 0.0})
    for var in ("DAGSTER_HOME", "PERSONA_WAREHOUSE_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PERSONA_CONFIG", str(config))
    from orchestration.definitions import defs
    from persona.config import load_settings

    settings = load_settings(config)
    os.environ["PERSONA_WAREHOUSE_PATH"] = str(settings.warehouse_path)
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("persona_full").execute_in_process(instance=instance, raise_on_error=False)

    assert not result.success
    checks = {e.event_specific_data.asset_check_key.name: e.event_specific_data
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks["quarantine_rate"].passed is False
    meta = checks["quarantine_rate"].metadata
    assert meta["limit"].value == 0.0 and meta["quarantined"].value > 0
    materialized = {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert {"raw_events", "raw_items", "quarantine_events"} <= materialized
    assert not materialized & {"stg_events", "fct_events", "dim_items", "item_embeddings", "user_profiles",
                               "ranker_model", "promoted_model"}

    # the webhook got a Slack-compatible payload naming the asset and the check, with counts and samples
    assert len(received) == 1, received
    hook = received[0]
    assert hook["path"] == "/hooks/persona" and hook["content_type"].startswith("application/json")
    payload = hook["body"]
    assert "quarantine_events" in payload["text"] and "quarantine_rate" in payload["text"]
    fields = json.dumps(payload["blocks"])
    assert "*Asset*\\nquarantine_events" in fields and "*Check*\\nquarantine_rate" in fields
    assert "quarantined:" in fields and "duplicate_row" in fields          # counts and a sample row
    # ... and the same alert is in the JSONL log
    alerts = [json.loads(x) for x in (tmp_path / "artifacts" / "alerts.jsonl").read_text().splitlines()]
    assert [(a["asset"], a["check"]) for a in alerts] == [("quarantine_events", "quarantine_rate")]
    assert alerts[0]["counts"]["limit"] == 0.0
