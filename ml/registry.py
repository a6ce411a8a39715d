"""Model registry on the filesystem: immutable version folders and one atomic champion pointer.

    models/
      versions/<version>/ranker.onnx, features.json, metrics.json, manifest.json, snapshot/
      CHAMPION            <- the promoted version id (replaced atomically with os.replace)
      history.jsonl       <- one line per promotion / rollback (who replaced whom, why, when)

A version is written into a staging folder and renamed into place, so a crash mid-write never
leaves a half version; promotion rewrites the pointer atomically, so a crash leaves the old
champion serving. The pointer is the truth; the history is appended *before* the pointer moves, so
a crash between the two leaves one line too many, which `rollback` and `verify` tolerate (they
follow the pointer). Staging folders left by a killed writer carry its pid and are removed by the
next writer (`clean_staging`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

POINTER = "CHAMPION"
HISTORY = "history.jsonl"


class RegistryError(RuntimeError):
    pass


def code_version(root: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def data_hash(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()[:16]


def _fsync_write(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def create_version(models_dir: str | Path, write: Callable[[Path], None], manifest: dict,
                   metrics: dict, features: list[str]) -> Path:
    """Write a new version via `write(staging_dir)`, then rename it into versions/ in one step."""
    models_dir = Path(models_dir)
    versions = models_dir / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    clean_staging(models_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    version = f"v{stamp}-{manifest.get('data_hash', 'nodata')[:8]}"
    staging = models_dir / f".staging-{version}-pid{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        write(staging)
        full_manifest = dict(manifest, version=version, created_at=datetime.now(timezone.utc).isoformat())
        _fsync_write(staging / "manifest.json", json.dumps(full_manifest, indent=2, default=str))
        _fsync_write(staging / "metrics.json", json.dumps(metrics, indent=2, default=str))
        _fsync_write(staging / "features.json", json.dumps(features, indent=2))
        os.replace(staging, versions / version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return versions / version


def list_versions(models_dir: str | Path) -> list[dict]:
    versions = Path(models_dir) / "versions"
    out = []
    champion = champion_version(models_dir)
    for d in sorted(versions.glob("v*")) if versions.exists() else []:
        if not (d / "manifest.json").exists():
            continue
        m = json.loads((d / "manifest.json").read_text())
        metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").exists() else {}
        out.append({"version": d.name, "path": str(d), "champion": d.name == champion,
                    "created_at": m.get("created_at"), "ndcg@10": metrics.get("ranker", {}).get("ndcg@10"),
                    "training_cutoff": m.get("training_cutoff"), "data_hash": m.get("data_hash"),
                    "code_version": m.get("code_version")})
    return out


def pseudonym_key(version_dir: str | Path) -> str | None:
    """The fingerprint of the pseudonymization key a version was made under (`off`, or None for versions older
    than the manifest field)."""
    path = Path(version_dir) / "manifest.json"
    return json.loads(path.read_text()).get("pseudonym_key") if path.exists() else None


def champion_version(models_dir: str | Path) -> str | None:
    p = Path(models_dir) / POINTER
    if not p.exists():
        return None
    v = p.read_text().strip()
    return v or None


def champion_dir(models_dir: str | Path) -> Path:
    v = champion_version(models_dir)
    if v is None:
        raise RegistryError(f"no promoted model in {models_dir}: run `persona run` first")
    d = Path(models_dir) / "versions" / v
    if not d.exists():
        raise RegistryError(f"champion pointer names {v}, which is missing from {d.parent}")
    return d


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_staging(models_dir: str | Path) -> list[Path]:
    """Staging folders whose writer is gone (killed mid-write): never visible as versions, safe to delete."""
    out = []
    for d in sorted(Path(models_dir).glob(".staging-*")):
        pid = d.name.rsplit("-pid", 1)[-1] if "-pid" in d.name else ""
        if not pid.isdigit() or not _pid_alive(int(pid)) or int(pid) == os.getpid():
            out.append(d)
    return out


def clean_staging(models_dir: str | Path) -> list[str]:
    removed = []
    for d in stale_staging(models_dir):
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d.name)
    for tmp in Path(models_dir).glob(f".{POINTER}.tmp*"):
        pid = tmp.name.rsplit(".", 1)[-1]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
    return removed


def history(models_dir: str | Path) -> list[dict]:
    """Promotions and rollbacks, oldest first (a torn last line from a crash is skipped)."""
    p = Path(models_dir) / HISTORY
    out = []
    if p.exists():
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _append_history(models_dir: Path, record: dict) -> None:
    path = models_dir / HISTORY
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a") as fh:
        fh.write(("\n" if torn else "") + json.dumps(record, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def promote(models_dir: str | Path, version: str, reason: str = "", action: str = "promote",
            details: dict | None = None) -> None:
    """Make `version` the champion: history line first, then one atomic pointer replace."""
    models_dir = Path(models_dir)
    if not (models_dir / "versions" / version / "manifest.json").exists():
        raise RegistryError(f"cannot promote {version}: no such complete version in {models_dir / 'versions'}")
    previous = champion_version(models_dir)
    _append_history(models_dir, {"at": datetime.now(timezone.utc).isoformat(), "action": action,
                                 "version": version, "previous": previous, "reason": reason,
                                 **({"details": details} if details else {})})
    tmp = models_dir / f".{POINTER}.tmp.{os.getpid()}"
    _fsync_write(tmp, version + "\n")
    os.replace(tmp, models_dir / POINTER)


def previous_champion(models_dir: str | Path) -> str | None:
    """The version the current champion replaced when it was last *promoted* (so repeated rollbacks walk back
    along the promotion chain instead of toggling), if it still exists."""
    models_dir = Path(models_dir)
    current = champion_version(models_dir)
    for rec in reversed(history(models_dir)):
        if rec.get("version") == current and rec.get("action") == "promote":
            prev = rec.get("previous")
            if prev and (models_dir / "versions" / prev / "manifest.json").exists():
                return prev
            return None
    return None


def rollback(models_dir: str | Path, to: str | None = None, reason: str = "") -> str:
    """Point the champion back to `to` (default: the version the current champion replaced)."""
    models_dir = Path(models_dir)
    current = champion_version(models_dir)
    target = to or previous_champion(models_dir)
    if target is None:
        raise RegistryError(f"nothing to roll back to: champion {current} has no recorded predecessor"
                            " (pass a version explicitly)")
    if target == current:
        raise RegistryError(f"{target} is already the champion")
    promote(models_dir, target, reason=reason or f"rollback from {current}", action="rollback")
    return target


def verify(models_dir: str | Path) -> list[str]:
    """Consistency problems of the registry (empty list = consistent).

    Checks: the champion pointer names a complete version; every version folder is complete
    (manifest, metrics, features, ranker.onnx); no staging folder of a dead writer is left over.
    """
    models_dir = Path(models_dir)
    problems = []
    current = champion_version(models_dir)
    if current is not None and not (models_dir / "versions" / current / "manifest.json").exists():
        problems.append(f"champion pointer names {current}, which is not a complete version")
    versions = models_dir / "versions"
    for d in sorted(versions.iterdir()) if versions.exists() else []:
        missing = [f for f in ("manifest.json", "metrics.json", "features.json", "ranker.onnx") if not (d / f).exists()]
        if missing:
            problems.append(f"version {d.name} is incomplete (missing {', '.join(missing)})")
    for d in stale_staging(models_dir):
        problems.append(f"stale staging folder {d.name} (writer gone; removed by the next write)")
    return problems


def gate(challenger: dict, champion: dict | None, metric: str = "ndcg@10", tolerance: float = 0.0) -> tuple[bool, str]:
    """Promote when there is no champion or the challenger is not worse by more than `tolerance`."""
    if champion is None:
        return True, "no champion yet"
    c, k = challenger.get(metric), champion.get(metric)
    if c is None or k is None:
        return False, f"{metric} missing (challenger {c}, champion {k})"
    if c + tolerance >= k:
        return True, f"challenger {metric} {c:.4f} >= champion {k:.4f} - {tolerance}"
    return False, f"challenger {metric} {c:.4f} < champion {k:.4f} - {tolerance}"
