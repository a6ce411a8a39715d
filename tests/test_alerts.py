"""Alerts: JSONL log and a real HTTP webhook receiver on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from persona.alerts import Alert, read_alerts, send_alert, slack_payload


def _alert(check: str = "raw_events_expectations", severity: str = "error") -> Alert:
    return Alert(
        severity=severity,
        asset="raw_events",
        check=check,
        message="2 expectation(s) failed: event_type in set, event_id unique",
        counts={"unexpected_event_type": 10, "duplicate_event_id": 2},
        samples=[{"event_type": "teleport", "row": 3}, {"event_id": "8b52cc073cfbe0cd"}],
    )


class _Receiver:
    """A real HTTP server in a thread that records every POST body."""

    def __init__(self, status: int = 200):
        self.requests: list[dict] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status < 400 else b"nope")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/persona"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_jsonl_append_two_alerts(tmp_path):
    path = tmp_path / "nested" / "dir" / "alerts.jsonl"
    a1 = _alert("check_one")
    a2 = _alert("check_two", severity="warn")
    d1 = send_alert(a1, jsonl_path=path)
    d2 = send_alert(a2, jsonl_path=path)
    assert d1.webhook_ok is None and d2.ok
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    rows = read_alerts(path)
    assert rows == [a1.to_dict(), a2.to_dict()]
    assert rows[0]["check"] == "check_one" and rows[1]["severity"] == "warn"
    assert rows[0]["counts"] == {"unexpected_event_type": 10, "duplicate_event_id": 2}
    assert rows[0]["samples"][0] == {"event_type": "teleport", "row": 3}
    assert rows[0]["ts"] and rows[0]["asset"] == "raw_events"
    # append-only: a third write keeps the first two untouched
    send_alert(_alert("check_three"), jsonl_path=path)
    assert path.read_text().splitlines()[:2] == lines


def test_read_alerts_missing_file(tmp_path):
    assert read_alerts(tmp_path / "none.jsonl") == []


def test_bad_severity_rejected():
    with pytest.raises(ValueError):
        Alert(severity="fatal", asset="a", check="c", message="m")


def test_webhook_receives_slack_payload(tmp_path):
    path = tmp_path / "alerts.jsonl"
    with _Receiver() as rx:
        d = send_alert(_alert("price_not_negative"), jsonl_path=path, webhook_url=rx.url, timeout=5)
    assert d.webhook_ok is True and d.webhook_status == 200 and d.error is None
    assert len(rx.requests) == 1
    req = rx.requests[0]
    assert req["path"] == "/hooks/persona"
    assert req["headers"]["Content-Type"].startswith("application/json")
    payload = json.loads(req["body"])
    assert "price_not_negative" in payload["text"] and "raw_events" in payload["text"]
    assert payload["blocks"][0]["type"] == "header"
    assert "price_not_negative" in json.dumps(payload["blocks"])
    assert "teleport" in json.dumps(payload["blocks"])  # samples included
    assert payload == slack_payload(read_alerts_one(path))
    assert len(read_alerts(path)) == 1


def read_alerts_one(path) -> Alert:
    (row,) = read_alerts(path)
    return Alert(**row)


def test_dead_webhook_keeps_jsonl_and_does_not_raise(tmp_path, caplog):
    path = tmp_path / "alerts.jsonl"
    url = f"http://127.0.0.1:{_closed_port()}/hook"
    with caplog.at_level(logging.WARNING, logger="persona.alerts"):
        d = send_alert(_alert("dead_hook"), jsonl_path=path, webhook_url=url, timeout=2)
    assert d.webhook_ok is False and not d.ok
    assert d.error and "failed" in d.error
    assert any("dead_hook" in r.getMessage() for r in caplog.records)
    rows = read_alerts(path)
    assert len(rows) == 1 and rows[0]["check"] == "dead_hook"


def test_webhook_http_error_is_reported(tmp_path):
    path = tmp_path / "alerts.jsonl"
    with _Receiver(status=500) as rx:
        d = send_alert(_alert("server_error"), jsonl_path=path, webhook_url=rx.url)
    assert len(rx.requests) == 1
    assert d.webhook_ok is False and d.webhook_status == 500 and "500" in d.error
    assert read_alerts(path)[0]["check"] == "server_error"


def test_invalid_webhook_url_does_not_raise(tmp_path):
    path = tmp_path / "alerts.jsonl"
    d = send_alert(_alert("bad_url"), jsonl_path=path, webhook_url="not a url at all")
    assert d.webhook_ok is False and d.error
    assert len(read_alerts(path)) == 1


def test_non_json_sample_values_and_datetime_ts(tmp_path):
    import datetime as dt

    import numpy as np
    import pandas as pd

    path = tmp_path / "alerts.jsonl"
    alert = Alert(ts=dt.datetime(2016, 9, 1, 12, 0, 0), severity="warn", asset="raw_events", check="ts_window",
                  message="1 event in the future", counts={"unexpected": np.int64(1)},
                  samples=[{"ts": pd.Timestamp("2099-01-01"), "price": np.float64(1.5)}])
    assert alert.ts == "2016-09-01T12:00:00+00:00"
    send_alert(alert, jsonl_path=path)
    (row,) = read_alerts(path)
    assert row["counts"] == {"unexpected": 1}
    assert row["samples"] == [{"ts": "2099-01-01T00:00:00", "price": 1.5}]
    assert set(row) == {"ts", "severity", "asset", "check", "message", "counts", "samples"}


def test_positional_construction():
    a = Alert("error", "ranker_model", "onnx_parity", "max diff 1e-3", {"rows": 3}, [{"i": 1}])
    assert (a.severity, a.asset, a.check, a.counts, a.samples) == ("error", "ranker_model", "onnx_parity",
                                                                   {"rows": 3}, [{"i": 1}])
    assert a.ts.endswith("+00:00")
