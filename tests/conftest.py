"""Shared fixtures: a small real slice of the embedded GA data and one full pipeline run over it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GA_PATH = ROOT / "data" / "ga_merch_store" / "product_events_2016-08_2016-10.parquet"

for _k, _v in {"DAGSTER_DISABLE_TELEMETRY": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)
# Ids are pseudonymized by default (privacy.pseudonymize): a fixed test key, so no test writes a key file to
# ~/.config and a test can compute a raw id's stored form (data_contracts.privacy.Pseudonymizer).
TEST_PSEUDONYM_KEY = "persona-test-pseudonym-key-0123456789abcdef"
os.environ["PERSONA_PSEUDONYM_KEY"] = TEST_PSEUDONYM_KEY


def ga_slice(out: Path, fraction: float, salt: str = "test-slice") -> Path:
    """Every event of a stable hash-sample of visitors: real rows, real sessions, smaller."""
    from ml.split import stable_sample

    raw = pd.read_parquet(GA_PATH)
    visitors = raw["full_visitor_id"].unique()
    keep = set(visitors[stable_sample(visitors, fraction, salt)])
    sliced = raw[raw["full_visitor_id"].isin(keep)]
    out.parent.mkdir(parents=True, exist_ok=True)
    sliced.to_parquet(out, index=False)
    return out


def raw_user_ids(settings):
    """(raw -> stored id, stored -> raw id) for the GA source of `settings`: apps call serving with the shop's raw
    ids, the warehouse and model hold their pseudonyms."""
    from data_contracts.privacy import Pseudonymizer

    pseudo = Pseudonymizer.from_settings(settings, create=False)
    raw = pd.read_parquet(settings.path(settings["source"]["path"]), columns=["full_visitor_id"])
    ids = raw["full_visitor_id"].astype("string").str.strip().dropna().unique()
    return pseudo.user_id, {pseudo.user_id(str(v)): str(v) for v in ids}


def write_config(folder: Path, source: Path, **overrides) -> Path:
    cfg = {
        "source": {"adapter": "ga_merch_product_events", "path": str(source)},
        "paths": {"warehouse_dir": str(folder / "warehouse"), "artifacts_dir": str(folder / "artifacts"),
                  "models_dir": str(folder / "models"), "dagster_home": str(folder / "dagster_home")},
        "alerts": {"jsonl": str(folder / "artifacts" / "alerts.jsonl")},
        "evaluation": {"bootstrap": 200},
    }
    for dotted, value in overrides.items():
        node = cfg
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    path = folder / "persona.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """Materialize the whole graph once on a 35% visitor slice; yields (settings, result)."""
    from dagster import DagsterInstance

    folder = tmp_path_factory.mktemp("e2e")
    source = ga_slice(folder / "data" / "ga_slice.parquet", 0.35)
    config = write_config(folder, source)
    old = os.environ.get("PERSONA_CONFIG")
    os.environ["PERSONA_CONFIG"] = str(config)
    try:
        from orchestration.definitions import defs
        from persona.config import load_settings

        settings = load_settings(config)
        os.environ["PERSONA_WAREHOUSE_PATH"] = str(settings.warehouse_path)
        with DagsterInstance.ephemeral() as instance:
            result = defs.resolve_job_def("persona_full").execute_in_process(instance=instance, raise_on_error=False)
        yield settings, result
    finally:
        if old is None:
            os.environ.pop("PERSONA_CONFIG", None)
        else:
            os.environ["PERSONA_CONFIG"] = old


def assert_same_top_k(body: dict, items: list[str], scores: np.ndarray) -> None:
    """Served items/scores equal the offline ones; only a tie within 1e-5 may swap positions."""
    served = [i["item_id"] for i in body["items"]]
    served_scores = np.array([i["score"] for i in body["items"]])
    np.testing.assert_allclose(served_scores, scores, atol=1e-5)
    for pos, (a, b) in enumerate(zip(served, items)):
        if a != b:  # only a tie within 1e-5 may swap
            assert abs(scores[pos] - served_scores[pos]) < 1e-5 and set(served) == set(items)
