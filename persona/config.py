"""One configuration for every stage: `persona.yaml`, overridable by environment variables.

Resolution order (later wins): built-in defaults < the YAML file < environment variables.
The YAML file is `$PERSONA_CONFIG` when set, else `persona.yaml` in the working directory.
Any key can be overridden as `PERSONA__SECTION__KEY=value` (double underscores between levels);
values are parsed as YAML, so `PERSONA__SPLIT__TEST_DAYS=7` is an int and `...=null` is None.
Relative paths are resolved against the config file's folder (the project root by default), so a
run behaves the same whatever the current directory is.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "PERSONA__"

DEFAULTS: dict[str, Any] = {
    "source": {
        "adapter": "ga_merch_product_events",
        "path": "data/ga_merch_store/product_events_2016-08_2016-10.parquet",
        "mapping": None,  # YAML column mapping for adapter `mapping` (docs/adapters.md)
        "inbox": None,    # folder watched by the inbox sensor; its files are loaded with source.path (once per hash)
    },
    "paths": {
        "warehouse_dir": "warehouse",
        "warehouse_file": "persona.duckdb",
        "artifacts_dir": "artifacts",
        "models_dir": "models",
        "dagster_home": ".dagster_home",
    },
    "quality": {
        "max_quarantine_rate": 0.05,
        "earliest_ts": "2000-01-01",
        "max_future_skew_hours": 24,
        "max_quarantine_rate_by_source": {},  # per-source override of max_quarantine_rate, by adapter/source name
        "max_text_lengths": {"title": 500, "description": 5000, "query": 500, "review_text": 10000},
        "mask_pii": True,  # mask e-mail addresses / phone numbers in free text (review_text, query)
    },
    "alerts": {"jsonl": "artifacts/alerts.jsonl", "webhook_url": None},
    # user/session ids -> HMAC-SHA256 pseudonyms at ingestion (data_contracts/privacy.py). Key: $PERSONA_PSEUDONYM_KEY
    # or key_file (created 0600 on first use, must be outside the warehouse folder).
    "privacy": {"pseudonymize": False, "key_file": "~/.config/persona/pseudonym.key"},
    "encoder": {
        "model": "bundled:all-MiniLM-L6-v2",
        "batch_size": 64,
        "max_length": 64,
        "device": "auto",
    },
    "split": {"test_days": 14, "valid_days": 14, "train_days": 14, "train_windows": 3},
    "targets": ["cart", "purchase"],
    "profiles": {
        "half_life_days": 14.0,
        "event_weights": {
            "search": 0.5,
            "view": 1.0,
            "click": 0.5,
            "cart": 3.0,
            "remove_from_cart": -1.0,
            "checkout": 3.0,
            "purchase": 5.0,
            "return": -2.0,
            "review": 2.0,
        },
        "k_min": 3,
        "k_max": 8,
        "silhouette_sample": 4000,
        "lifecycle_days": {"new": 14, "active": 14, "at_risk": 45},
    },
    "candidates": {
        "covisitation": 50,
        "embedding": 50,
        "repeat": 50,
        "popularity": 50,
        "covis_window_hours": 24,
        "covis_top_neighbors": 50,
        "popularity_days": 7,
    },
    "ranker": {
        "n_estimators": 400,
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_child_samples": 20,
        "early_stopping_rounds": 40,
        "seed": 42,
    },
    "evaluation": {"bootstrap": 1000, "seed": 7},
    "registry": {"promotion_tolerance": 0.0},
    "onnx": {"target_opset": 15, "parity_tolerance": 1e-4},
    "drift": {"max_rows": 5000, "share_threshold": 0.3, "ndcg_drop": 0.05, "window_days": None, "max_users": 300},
    "replay": {"step_days": {"ga": 7, "uci": 30},
               "split": {"test_days": 7, "valid_days": 7, "train_days": 7, "train_windows": 3},
               "min_history_days": 14, "out_dir": "artifacts"},
    "serving": {
        "host": "127.0.0.1",
        "port": 8000,
        "api_key": None,                 # when set, /v1/* needs header X-API-Key with this value
        "request_timeout_s": 2.0,        # a request running longer answers 504
        "reload_interval_s": 2.0,        # how often the champion pointer is checked for a new version
        "inbox": "warehouse/inbox/events.jsonl",   # posted events, durable, for the next training run
        "prediction_log": "artifacts/serving/predictions.jsonl",
        "prediction_log_sample_rate": 0.05,        # share of responses logged (items, scores) for drift
        "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "search": {"semantic_candidates": 100, "lexical_weight": 0.5, "personal_weight": 0.3,
                   "max_query_chars": 200},
    },
}


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_overrides(environ: dict[str, str]) -> dict:
    out: dict = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__") if k]
        if not keys:
            continue
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = yaml.safe_load(raw) if raw != "" else None
    return out


class ConfigError(ValueError):
    """The configuration file or an override is unusable; the message names which."""


@dataclass(frozen=True)
class Settings:
    """Resolved configuration plus the folder relative paths are taken from."""

    data: dict
    root: Path
    source_file: Path | None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def path(self, value: str | os.PathLike) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.root / p)

    @property
    def warehouse_dir(self) -> Path:
        return self.path(self.data["paths"]["warehouse_dir"])

    @property
    def warehouse_path(self) -> Path:
        return self.warehouse_dir / self.data["paths"]["warehouse_file"]

    @property
    def artifacts_dir(self) -> Path:
        return self.path(self.data["paths"]["artifacts_dir"])

    @property
    def models_dir(self) -> Path:
        return self.path(self.data["paths"]["models_dir"])

    @property
    def dagster_home(self) -> Path:
        return self.path(self.data["paths"]["dagster_home"])

    @property
    def source_path(self) -> Path:
        return self.path(self.data["source"]["path"])

    @property
    def alerts_path(self) -> Path:
        return self.path(self.data["alerts"]["jsonl"])


def load_settings(config_path: str | os.PathLike | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    environ = dict(os.environ if environ is None else environ)
    if config_path is None:
        config_path = environ.get("PERSONA_CONFIG")
    if config_path is None and (PROJECT_ROOT / "persona.yaml").exists():
        config_path = PROJECT_ROOT / "persona.yaml"
    file_data: dict = {}
    source_file: Path | None = None
    root = PROJECT_ROOT
    if config_path is not None:
        source_file = Path(config_path).expanduser().resolve()
        if not source_file.exists():
            raise ConfigError(f"config file not found: {source_file}")
        try:
            file_data = yaml.safe_load(source_file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {source_file} is not valid YAML: {exc}") from exc
        if not isinstance(file_data, dict):
            raise ConfigError(f"config file {source_file} must hold a mapping at top level")
        root = source_file.parent
    data = _deep_merge(DEFAULTS, file_data)
    data = _deep_merge(data, _env_overrides(environ))
    _validate(data, source_file)
    return Settings(data=data, root=root, source_file=source_file)


def _validate(data: dict, source_file: Path | None) -> None:
    where = str(source_file) if source_file else "defaults/environment"
    split = data["split"]
    for key in ("test_days", "valid_days", "train_days"):
        value = split.get(key)
        if not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{where}: split.{key} must be a positive number of days, got {value!r}")
    allowed = {"search", "view", "click", "cart", "remove_from_cart", "checkout", "purchase",
               "return", "review"}
    bad = [t for t in data["targets"] if t not in allowed]
    if bad or not data["targets"]:
        raise ConfigError(f"{where}: targets must be a non-empty subset of {sorted(allowed)}, got {data['targets']!r}")
    rate = data["quality"]["max_quarantine_rate"]
    if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ConfigError(f"{where}: quality.max_quarantine_rate must be within [0, 1], got {rate!r}")
    by_source = data["quality"].get("max_quarantine_rate_by_source") or {}
    if not isinstance(by_source, dict) or any(
            not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1 for v in by_source.values()):
        raise ConfigError(f"{where}: quality.max_quarantine_rate_by_source must map source names to rates "
                          f"within [0, 1], got {by_source!r}")
    lengths = data["quality"].get("max_text_lengths") or {}
    if not isinstance(lengths, dict) or any(
            k not in ("title", "description", "query", "review_text")
            or not isinstance(v, int) or isinstance(v, bool) or v <= 0 for k, v in lengths.items()):
        raise ConfigError(f"{where}: quality.max_text_lengths must map title/description/query/review_text to "
                          f"positive integers, got {lengths!r}")
