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
        # limits of the dbt marts' GE suites (data_contracts/expectations.py): min_rows fails the blocking
        # <mart>_contract checks; the others are plausibility bounds of the WARN <mart>_plausibility checks
        "marts": {"min_rows": 1, "max_session_hours": 24, "max_session_events": 2000, "max_anonymous_share": 0.5,
                  "max_price": 10000},
    },
    "alerts": {"jsonl": "artifacts/alerts.jsonl", "webhook_url": None},
    # user/session ids -> HMAC-SHA256 pseudonyms at ingestion (data_contracts/privacy.py). Key: $PERSONA_PSEUDONYM_KEY
    # or key_file (created 0600 on first use, must be outside the warehouse folder).
    "privacy": {"pseudonymize": True, "key_file": "~/.config/persona/pseudonym.key"},
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
        "intent_days": 7,            # intent:cart_open = cart/checkout in this many days, no purchase after it
        "max_interests": 3,          # interest vectors per user (table user_interests)
        "interest_min_share": 0.15,  # a further interest needs this share of the user's category weight
    },
    "candidates": {
        "covisitation": 50,
        "embedding": 50,
        "repeat": 50,
        "popularity": 50,
        "covis_window_hours": 24,
        "covis_top_neighbors": 50,
        "popularity_days": 7,
        "als": 50,                 # top of an ALS model fitted on the snapshot (0 = source off)
        "itemknn": 50,             # neighbours of the whole history (0 = source off)
        "knn_top_neighbors": 100,
        "als_factors": 64,         # 0 = no ALS factors (no source, zero als_* features)
        "als_regularization": 0.01,
        "als_alpha": 10.0,
        "als_iterations": 15,
    },
    "ranker": {
        "n_estimators": 400,
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_child_samples": 20,
        "early_stopping_rounds": 40,
        "seed": 42,
        "reg_lambda": 0.0,
        "colsample_bytree": 0.8,
        # overrides tried by ml.ranker.tune_ranker; the best on the validation window is kept
        "grid": [{}, {"num_leaves": 15, "min_child_samples": 50},
                 {"num_leaves": 63, "min_child_samples": 50, "learning_rate": 0.03},
                 {"num_leaves": 7, "min_child_samples": 100, "learning_rate": 0.03, "reg_lambda": 5.0}],
    },
    "evaluation": {"bootstrap": 1000, "seed": 7},
    # two-tower profile refinement (ml/refine.py; asset refined_profiles). Kept as published tables because it beat
    # the unrefined profile on GA test Recall@20 with the paired CI above zero (bench/results/refinement.md); not
    # fed to the ranker, where it gave no gain (bench/results/refinement_ranker.md).
    "refinement": {"enabled": True, "item_tower": "fused", "user_tower": "attention", "epochs": 4,
                   "batch_size": 256, "lr": 0.002, "temperature": 0.05, "max_history": 50,
                   "max_examples": 30000, "seed": 0, "device": "auto"},
    # image vectors for the fused item tower (ml/fusion.py): `images` is a Parquet/CSV file keyed by item_id with
    # precomputed vectors (vector_column) or image files (path_column, relative to that file's folder) encoded
    # by the local Hugging Face vision model folder `image_model`. null = text + structured fields only.
    "fusion": {"images": None, "vector_column": "image_vector", "path_column": "image_path", "image_model": None,
               "batch_size": 16, "device": "auto"},
    "registry": {"promotion_tolerance": 0.0},
    "onnx": {"target_opset": 15, "parity_tolerance": 1e-4},
    "drift": {"max_rows": 5000, "share_threshold": 0.2, "column_threshold": 0.1, "natural_factor": 2.0,
              "ndcg_drop": 0.05, "window_days": None, "max_users": 300},
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
    marts = data["quality"].get("marts") or {}
    known = ("min_rows", "max_session_hours", "max_session_events", "max_anonymous_share", "max_price")
    if not isinstance(marts, dict) or any(k not in known or not isinstance(v, (int, float)) or isinstance(v, bool)
                                          or v < 0 for k, v in marts.items()):
        raise ConfigError(f"{where}: quality.marts must map {', '.join(known)} to non-negative numbers, got {marts!r}")
    if marts.get("max_anonymous_share", 0) > 1:
        raise ConfigError(f"{where}: quality.marts.max_anonymous_share must be within [0, 1], "
                          f"got {marts['max_anonymous_share']!r}")
