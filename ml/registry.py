"""Model registry on the filesystem: immutable version folders and one atomic champion pointer.

    models/
      versions/<version>/ranker.onnx, features.json, metrics.json, manifest.json, snapshot/
      CHAMPION            <- the promoted version id (replaced atomically with os.replace)

A version is written into a staging folder and renamed into place, so a crash mid-write never
leaves a half version; promotion rewrites the pointer atomically, so a crash leaves the old
champion serving.
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
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    version = f"v{stamp}-{manifest.get('data_hash', 'nodata')[:8]}"
    staging = models_dir / f".staging-{version}"
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
                    "created_at": m.get("created_at"), "ndcg@10": metrics.get("ranker", {}).get("ndcg@10")})
    return out


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


def promote(models_dir: str | Path, version: str) -> None:
    models_dir = Path(models_dir)
    if not (models_dir / "versions" / version / "manifest.json").exists():
        raise RegistryError(f"cannot promote {version}: no such complete version in {models_dir / 'versions'}")
    tmp = models_dir / f".{POINTER}.tmp"
    _fsync_write(tmp, version + "\n")
    os.replace(tmp, models_dir / POINTER)


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
