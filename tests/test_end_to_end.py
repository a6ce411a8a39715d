"""The whole graph materialized on a real slice: real DuckDB, real dbt, real Dagster, real onnxruntime, real HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import lightgbm as lgb
import numpy as np
import pytest

from ml import registry
from ml.candidates import generate
from ml.features import build_features
from ml.snapshot import Snapshot
from persona.warehouse import read_df
from tests.conftest import assert_same_top_k, raw_user_ids

pytestmark = pytest.mark.slow


def test_every_step_and_check_succeeds(pipeline_run):
    settings, result = pipeline_run
    failures = [e.step_key for e in result.all_events if e.is_step_failure]
    assert result.success, f"failed steps: {failures}"
    checks = [e.event_specific_data for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    names = {c.asset_check_key.name for c in checks}
    assert {"raw_events_contract", "raw_items_contract", "quarantine_rate", "onnx_parity"} <= names
    assert len(checks) > 50  # dbt tests show up as checks too
    assert all(c.passed for c in checks), [c.asset_check_key.name for c in checks if not c.passed]


def test_summary_reports_real_numbers(pipeline_run):
    settings, _ = pipeline_run
    summary = json.loads((settings.artifacts_dir / "summary.json").read_text())
    db = settings.warehouse_path
    raw = read_df(db, "select count(*) n from raw_events")["n"][0]
    quarantined = read_df(db, "select count(*) n from quarantine_events")["n"][0]
    assert summary["events_in"] == raw + quarantined
    assert summary["events_quarantined"] == quarantined > 0  # exact duplicate GA rows are in the slice
    assert summary["onnx_max_abs_diff"] < 1e-4
    for model in ("ranker", "popularity", "covisitation", "repeat"):
        m = summary["metrics"][model]
        assert 0.0 <= m["ndcg@10"] <= 1.0 and 0.0 <= m["recall@20"] <= 1.0 and 0.0 <= m["mrr@20"] <= 1.0
        lo, hi = summary["intervals"][model]["ndcg@10"]
        assert lo <= m["ndcg@10"] <= hi
    assert summary["metrics"]["ranker"]["ndcg@10"] > summary["metrics"]["popularity"]["ndcg@10"]
    assert 0.0 <= summary["drift_share"] <= 1.0
    assert Path(summary["drift_report"]).exists()
    assert Path(summary["warehouse"]) == db


def test_profiles_at_training_cutoff_cover_exactly_the_users_seen_before_it(pipeline_run):
    settings, _ = pipeline_run
    db = settings.warehouse_path
    manifest = json.loads((registry.champion_dir(settings.models_dir) / "manifest.json").read_text())
    cutoff = manifest["training_cutoff"]
    expected = read_df(db, "select count(distinct user_id) n from fct_events where user_id is not null and ts < ?",
                       [cutoff])["n"][0]
    got = read_df(db, "select count(*) n, count(distinct user_id) d, min(as_of) a from user_profiles "
                      "where snapshot = 'evaluation'")
    assert got["n"][0] == got["d"][0] == expected > 0
    assert str(got["a"][0]).startswith(cutoff[:10])
    serving = read_df(db, "select count(*) n from user_profiles where snapshot = 'serving'")["n"][0]
    identified = read_df(db, "select count(distinct user_id) n from fct_events where user_id is not null")["n"][0]
    assert serving == identified


def test_junk_categories_never_become_tags(pipeline_run):
    settings, _ = pipeline_run
    tags = read_df(settings.warehouse_path, "select unnest(tags) t from user_profiles")["t"]
    assert len(tags) > 0
    assert not tags.str.contains("(not set)", regex=False).any()
    assert not tags.str.contains("escCatTitle", regex=False).any()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(pipeline_run):
    settings, _ = pipeline_run
    port = _free_port()
    env = dict(os.environ, PERSONA_CONFIG=str(settings.source_file))
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            env=env, cwd=Path(__file__).resolve().parent.parent)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("server did not start")
    yield base
    proc.terminate()
    proc.wait(timeout=10)


def test_served_top_k_equals_offline_top_k(pipeline_run, server):
    settings, _ = pipeline_run
    version = registry.champion_dir(settings.models_dir)
    snap = Snapshot.load(version / "snapshot")
    booster = lgb.Booster(model_file=str(version / "ranker.txt"))
    # a known user with a rich history
    u = int(np.argmax(np.diff(snap.hist_ptr)))
    _, raw_of = raw_user_ids(settings)
    user = raw_of[str(snap.user_ids[u])]  # apps send the shop's raw id; serving pseudonymizes it like ingestion
    assert user != str(snap.user_ids[u])
    cand = generate(snap, u, settings["candidates"])
    scores = booster.predict(build_features(snap, u, cand))
    order = np.lexsort((cand.items, -scores))[:10]
    offline_items = [str(snap.item_ids[i]) for i in cand.items[order]]
    offline_scores = scores[order]

    r = httpx.get(f"{server}/v1/recommendations", params={"user_id": user, "k": 10}, timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["strategy"] == "ranker" and body["model_version"] == version.name
    assert_same_top_k(body, offline_items, offline_scores)


def test_unknown_user_gets_popular_items_as_fallback(pipeline_run, server):
    settings, _ = pipeline_run
    snap = Snapshot.load(registry.champion_dir(settings.models_dir) / "snapshot")
    r = httpx.get(f"{server}/v1/recommendations", params={"user_id": "no-such-user", "k": 5}, timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["strategy"] == "fallback"
    assert [i["item_id"] for i in body["items"]] == [str(snap.item_ids[i]) for i in snap.pop_order[:5]]


@pytest.mark.parametrize("params", [{"user_id": "x", "k": 0}, {"user_id": "x", "k": 1000}, {"k": 5}])
def test_bad_requests_get_a_4xx_with_a_message(server, params):
    r = httpx.get(f"{server}/v1/recommendations", params=params, timeout=10)
    assert r.status_code == 422
    assert r.json()["detail"]


def test_serving_snapshot_history_agrees_with_the_dbt_interactions_mart(pipeline_run):
    """Python's as-of state and dbt's marts are two views of the same events: at the end they must agree."""
    settings, _ = pipeline_run
    snap = Snapshot.load(registry.champion_dir(settings.models_dir) / "snapshot")
    mart = read_df(settings.warehouse_path,
                   "select user_id, item_id, n_view, n_click, n_cart, n_remove_from_cart, n_checkout, n_purchase "
                   "from fct_user_item_interactions")
    assert len(mart) == len(snap.hist_item)
    checked = 0
    for u in np.linspace(0, len(snap.user_ids) - 1, 25).astype(int):
        items, feat = snap.history(u)
        rows = mart[mart["user_id"] == snap.user_ids[u]].set_index("item_id")
        assert sorted(rows.index) == sorted(str(snap.item_ids[i]) for i in items)
        for i, f in zip(items, feat):
            r = rows.loc[str(snap.item_ids[i])]
            assert list(f[:6]) == [r.n_view, r.n_click, r.n_cart, r.n_remove_from_cart, r.n_checkout, r.n_purchase]
            checked += 1
    assert checked > 25
