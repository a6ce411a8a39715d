"""The inbox: log files dropped into `source.inbox` are picked up by a sensor and loaded once.

A load is keyed by the file's content hash (SHA-256), recorded per file in the warehouse table
`ingest_log`. The ingest asset loads `source.path` plus every inbox file, each content once, so a file
dropped twice (same name, or a copy under another name) adds nothing: the copy is skipped (logged and
counted in the materialization's `duplicate_files`) and no table changes - `ingest_log` keeps the first
load's `loaded_at`. The sensor asks for a `persona_full`
run only when the inbox holds content whose hash is not in `ingest_log`; its run key is built from those
hashes, so one new content never launches two runs.

Settings: `source.inbox` (a folder; null = no inbox), every file there in `source.adapter`'s format.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason, sensor

from data_contracts.adapters import source_files
from orchestration.jobs import full_job
from persona.config import Settings, load_settings


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def inbox_dir(settings: Settings) -> Path | None:
    value = settings.get("source.inbox")
    return settings.path(value) if value else None


def inbox_files(settings: Settings) -> list[Path]:
    folder = inbox_dir(settings)
    if folder is None or not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")
            and p.suffix.lower() not in {".yaml", ".yml", ".md", ".txt", ".part", ".tmp"}]


@dataclass
class LoadPlan:
    """The files one ingest loads, and the ones skipped because their content was already there."""

    files: list[Path] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)         # path -> sha256
    duplicates: list[tuple[Path, str]] = field(default_factory=list)   # (path, name of the file it repeats)


def plan(settings: Settings, known: dict[str, str] | None = None) -> LoadPlan:
    """`source.path` (a file or folder) then the inbox files, each content once.

    `known` (sha256 -> source_file of earlier loads) keeps the name a content was first loaded under, so a
    copy dropped under another name never replaces it (row lineage and event ids stay the same)."""
    known = known or {}
    candidates = [(f, file_sha256(f)) for f in source_files(settings.source_path) + inbox_files(settings)]
    chosen: dict[str, Path] = {}
    for f, digest in candidates:
        if digest not in chosen or (known.get(digest) == f.name and chosen[digest].name != f.name):
            chosen[digest] = f
    out = LoadPlan()
    for f, digest in candidates:
        if chosen[digest] is f:
            out.files.append(f)
            out.hashes[str(f)] = digest
        else:
            out.duplicates.append((f, chosen[digest].name))
    return out


def previous_loads(warehouse, settings: Settings) -> dict[str, tuple[str, object]]:
    """sha256 -> (source_file, loaded_at) of the files in the warehouse's ingest_log ({} before a first load)."""
    from persona.warehouse import table_exists

    if not table_exists(warehouse.resolve(settings), "ingest_log"):
        return {}
    log = warehouse.read(settings, "select sha256, source_file, loaded_at from ingest_log")
    return {h: (f, t) for h, f, t in zip(log["sha256"], log["source_file"], log["loaded_at"])}


def loaded_hashes(settings: Settings) -> set[str]:
    from persona import warehouse

    path = settings.warehouse_path
    if not warehouse.table_exists(path, "ingest_log"):
        return set()
    return set(warehouse.read_df(path, "select sha256 from ingest_log")["sha256"])


def evaluate(settings: Settings) -> RunRequest | SkipReason:
    folder = inbox_dir(settings)
    if folder is None:
        return SkipReason("no inbox configured (source.inbox)")
    files = inbox_files(settings)
    if not files:
        return SkipReason(f"inbox {folder} is empty")
    known = loaded_hashes(settings)
    new = [(h, name) for h, name in sorted({file_sha256(f): f.name for f in files}.items()) if h not in known]
    if not new:
        return SkipReason(f"{len(files)} inbox file(s), all already loaded (same content hash)")
    key = hashlib.sha256("|".join(h for h, _ in new).encode()).hexdigest()[:24]
    return RunRequest(run_key=f"inbox-{key}",
                      tags={"persona/trigger": "inbox_sensor", "persona/new_files": ",".join(n for _, n in new)[:1000]})


@sensor(job=full_job, minimum_interval_seconds=30, default_status=DefaultSensorStatus.STOPPED,
        description="Loads log files dropped into source.inbox: one persona_full run per new content hash.")
def inbox_sensor(context: SensorEvaluationContext):
    result = evaluate(load_settings())
    if isinstance(result, SkipReason):
        context.log.info(result.skip_message or "")
    return result
