"""Alerts from data-quality checks and drift: an append-only JSONL log plus an optional webhook.

`send_alert` always writes the JSONL record first (append, flush, fsync), then, when a webhook URL is
configured, POSTs a Slack-compatible payload (`text` + `blocks`; Slack incoming webhooks, Mattermost
and most chat bridges accept it). A webhook failure is logged as a warning and reported in the
returned `Delivery`; it never raises and never loses the JSONL record.

Settings: `alerts.jsonl` (path of the log) and `alerts.webhook_url` (null = log only).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import httpx

log = logging.getLogger(__name__)

Severity = Literal["error", "warn"]
SEVERITIES: tuple[str, ...] = ("error", "warn")
MAX_SAMPLES_IN_MESSAGE = 5
_EMOJI = {"error": ":rotating_light:", "warn": ":warning:"}
_WRITE_LOCK = threading.Lock()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Alert:
    """One alert: `Alert(severity, asset, check, message, counts, samples)`.

    `ts` (last, so the others can be positional) defaults to now (UTC, ISO 8601); a datetime is
    converted to that form.
    """

    severity: Severity
    asset: str
    check: str
    message: str
    counts: dict[str, Any] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    ts: str = field(default_factory=_now_iso)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"Alert.severity must be one of {SEVERITIES}, got {self.severity!r}")
        if isinstance(self.ts, datetime):
            ts = self.ts if self.ts.tzinfo else self.ts.replace(tzinfo=timezone.utc)
            self.ts = ts.isoformat(timespec="seconds")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Delivery:
    """What happened to one alert. `webhook_ok` is None when no webhook was configured."""

    jsonl_path: Path
    webhook_ok: bool | None = None
    webhook_status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.webhook_ok is not False


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        try:
            return value.item()
        except Exception:
            pass
    return str(value)


def _append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (line + "\n").encode("utf-8")
    with _WRITE_LOCK:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            try:  # serialise writers in other processes too (POSIX only; best effort elsewhere)
                import fcntl
                fcntl.flock(fd, fcntl.LOCK_EX)
            except (ImportError, OSError):
                pass
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the flock


def slack_payload(alert: Alert) -> dict:
    """Slack-compatible message: a plain `text` fallback plus Block Kit `blocks`."""
    emoji = _EMOJI.get(alert.severity, "")
    title = f"{emoji} [{alert.severity.upper()}] {alert.asset} / {alert.check}".strip()
    text = f"{title}: {alert.message}"
    counts = ", ".join(f"{k}: {v}" for k, v in alert.counts.items()) or "none"
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": alert.message[:2900] or "(no message)"}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Asset*\n{alert.asset}"},
            {"type": "mrkdwn", "text": f"*Check*\n{alert.check}"},
            {"type": "mrkdwn", "text": f"*Severity*\n{alert.severity}"},
            {"type": "mrkdwn", "text": f"*Counts*\n{counts[:1900]}"},
        ]},
    ]
    if alert.samples:
        sample_text = "\n".join(json.dumps(s, default=_json_default)[:300]
                                for s in alert.samples[:MAX_SAMPLES_IN_MESSAGE])
        blocks.append({"type": "section",
                       "text": {"type": "mrkdwn", "text": f"*Samples*\n```{sample_text[:2800]}```"}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"at {alert.ts}"}]})
    return {"text": text, "blocks": blocks}


def send_alert(alert: Alert, *, jsonl_path: str | os.PathLike, webhook_url: str | None = None,
               timeout: float = 5) -> Delivery:
    """Append `alert` to `jsonl_path` (always), then POST it to `webhook_url` (when set).

    Raises only if the JSONL record cannot be written (that is the alert of record); webhook problems
    are logged and returned in `Delivery.error`.
    """
    path = Path(jsonl_path)
    _append_line(path, json.dumps(alert.to_dict(), default=_json_default, ensure_ascii=False))
    delivery = Delivery(jsonl_path=path)
    if not webhook_url:
        return delivery
    try:
        response = httpx.post(webhook_url, json=json.loads(json.dumps(slack_payload(alert), default=_json_default)),
                              timeout=timeout)
        delivery.webhook_status = response.status_code
        if response.is_success:
            delivery.webhook_ok = True
        else:
            delivery.webhook_ok = False
            delivery.error = f"webhook answered HTTP {response.status_code}: {response.text[:200]}"
    except Exception as exc:  # network errors, bad URL, timeouts: never raise to the caller
        delivery.webhook_ok = False
        delivery.error = f"webhook POST failed: {type(exc).__name__}: {exc}"
    if delivery.error:
        log.warning("alert %s/%s written to %s but not delivered: %s",
                    alert.asset, alert.check, path, delivery.error)
    return delivery


def read_alerts(jsonl_path: str | os.PathLike) -> list[dict]:
    """All alerts in the log, oldest first; [] if the file does not exist. Skips a torn last line."""
    path = Path(jsonl_path)
    if not path.exists():
        return []
    out = []
    with path.open("r", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s:%d is not valid JSON; skipped", path, n)
    return out
