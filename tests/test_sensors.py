"""Drift -> retraining, end to end on a real slice and a real temporary Dagster instance.

A copy of the session pipeline's deployment (warehouse + registry) gets drift injected into its latest weeks
(prices up, the biggest top category gone); the champion monitors run as Dagster assets into a temporary
instance; the sensor reads their materializations and asks for a retraining run. That run is first killed with
SIGKILL while it writes its version (the registry must stay consistent, the champion unchanged), then rerun to
completion. Controls: the unchanged copy, and a resample of the champion's reference window, request nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
import yaml
from dagster import AssetMaterialization, DagsterInstance, build_sensor_context, materialize

from ml import monitoring as mon
from ml import registry
from orchestration.assets.monitoring import champion_monitoring
from orchestration.resources import PersonaConfig, Warehouse
from orchestration.sensors import drift_retrain_sensor
from persona.config import DEFAULTS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent

PRICE_FACTOR = 1.5


def copy_deployment(settings, folder: Path) -> Path:
    """Warehouse + registry of the session pipeline, with a config pointing at the copies."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(settings.warehouse_dir, folder / "warehouse")
    shutil.copytree(settings.models_dir, folder / "models")
    cfg = yaml.safe_load(settings.source_file.read_text())
    cfg["paths"] = {"warehouse_dir": str(folder / "warehouse"), "artifacts_dir": str(folder / "artifacts"),
                    "models_dir": str(folder / "models"), "dagster_home": str(folder / "dagster_home")}
    cfg["alerts"] = {"jsonl": str(folder / "artifacts" / "alerts.jsonl")}
    assert "drift" not in cfg  # the trigger runs with its default configuration
    path = folder / "persona.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def inject_drift(db: Path, days: int = 28) -> dict:
    """Over the last `days` of events: prices x1.5 (events and catalogue) and the biggest top category removed."""
    con = duckdb.connect(str(db))
    end = con.execute("select date_trunc('day', max(ts)) + interval 1 day from fct_events").fetchone()[0]
    since = end - dt.timedelta(days=days)
    cat = con.execute("select split_part(i.category_path, '/', 1) c, count(*) n from fct_events e join dim_items i "
                      "using (item_id) where e.ts >= ? group by 1 order by 2 desc limit 1", [since]).fetchone()[0]
    removed = con.execute("select count(*) from fct_events where ts >= ? and item_id in (select item_id from dim_items "
                          "where split_part(category_path, '/', 1) = ?)", [since, cat]).fetchone()[0]
    con.execute("delete from fct_events where ts >= ? and item_id in (select item_id from dim_items "
                "where split_part(category_path, '/', 1) = ?)", [since, cat])
    con.execute(f"update fct_events set price = price * {PRICE_FACTOR} where ts >= ?", [since])
    con.execute(f"update dim_items set price = price * {PRICE_FACTOR}")
    con.close()
    return {"since": str(since), "category": cat, "events_removed": int(removed)}


def run_monitors(config: Path, instance: DagsterInstance) -> dict:
    res = materialize([champion_monitoring], instance=instance,
                      resources={"persona": PersonaConfig(config_file=str(config)), "warehouse": Warehouse()})
    assert res.success
    mats = {m.asset_key.to_user_string(): {k: getattr(v, "value", v) for k, v in m.metadata.items()}
            for m in res.asset_materializations_for_node("champion_monitoring")}
    assert set(mats) == {"feature_drift", "prediction_drift", "target_drift", "champion_performance"}
    return mats


def evaluate_sensor(instance, cursor=None):
    return drift_retrain_sensor(build_sensor_context(instance=instance, cursor=cursor))


@pytest.fixture(scope="module")
def injected(pipeline_run, tmp_path_factory):
    settings, result = pipeline_run
    assert result.success
    folder = tmp_path_factory.mktemp("drift_injected")
    config = copy_deployment(settings, folder)
    info = inject_drift(folder / "warehouse" / settings["paths"]["warehouse_file"])
    old = os.environ.get("PERSONA_CONFIG")
    os.environ["PERSONA_CONFIG"] = str(config)
    (folder / "dagster_home").mkdir()
    instance = DagsterInstance.local_temp(str(folder / "dagster_home"))
    try:
        mats = run_monitors(config, instance)
        yield {"folder": folder, "config": config, "instance": instance, "mats": mats, "info": info,
               "champion": registry.champion_version(folder / "models")}
    finally:
        instance.dispose()
        if old is None:
            os.environ.pop("PERSONA_CONFIG", None)
        else:
            os.environ["PERSONA_CONFIG"] = old


def test_injected_drift_makes_the_sensor_request_retraining(injected):
    from persona.config import load_settings

    settings = load_settings(injected["config"])
    threshold = settings["drift"]["share_threshold"]
    assert threshold == DEFAULTS["drift"]["share_threshold"]
    fd = injected["mats"]["feature_drift"]
    print(f"\ninjected {injected['info']}: drift share {fd['drift_share']:.3f} ({fd['n_drifted']}/{fd['n_columns']}), "
          f"vs training windows {fd['drift_share_vs_training']:.3f}; columns {fd['drifted_columns']}")
    assert fd["drift_share"] >= threshold
    assert {"it_price", "price_ratio"} & set(fd["drifted_columns"])
    assert Path(fd["report"]).exists() and Path(injected["mats"]["target_drift"]["report"]).exists()
    result = evaluate_sensor(injected["instance"])
    assert len(result.run_requests) == 1, result.skip_reason
    req = result.run_requests[0]
    assert req.job_name in (None, "persona_retrain")
    assert req.tags["persona/trigger"] == "drift_retrain_sensor"
    assert req.tags["persona/champion"] == injected["champion"]
    assert "drift share" in req.tags["persona/reasons"]
    # the same drift check is decided once
    again = evaluate_sensor(injected["instance"], cursor=result.cursor)
    assert not again.run_requests


def _retrain_script(config: Path) -> str:
    return (
        "import os\n"
        f"os.environ['PERSONA_CONFIG'] = {str(config)!r}\n"
        "from dagster import DagsterInstance\n"
        "from orchestration.definitions import defs\n"
        "with DagsterInstance.ephemeral() as inst:\n"
        "    r = defs.resolve_job_def('persona_retrain').execute_in_process(instance=inst, raise_on_error=False)\n"
        "raise SystemExit(0 if r.success else 1)\n")


def test_kill_9_during_retraining_then_rerun(injected):
    folder, config = injected["folder"], injected["config"]
    models = folder / "models"
    champion = registry.champion_version(models)
    versions_before = sorted(p.name for p in (models / "versions").iterdir())
    history_before = registry.history(models)
    env = dict(os.environ, PERSONA_CONFIG=str(config))
    proc = subprocess.Popen([sys.executable, "-c", _retrain_script(config)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_in = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        staging = list(models.glob(".staging-*"))
        if staging:
            os.kill(proc.pid, signal.SIGKILL)
            killed_in = staging[0].name
            break
        time.sleep(0.02)
    proc.wait(timeout=30)
    assert killed_in is not None, f"retraining ended (rc {proc.returncode}) before it wrote a version"
    assert proc.returncode == -signal.SIGKILL
    # no half version, champion unchanged; the dead writer's staging folder is reported, never listed
    assert sorted(p.name for p in (models / "versions").iterdir()) == versions_before
    assert registry.champion_version(models) == champion
    assert [v["version"] for v in registry.list_versions(models)] == versions_before
    problems = registry.verify(models)
    assert len(problems) == 1 and "stale staging" in problems[0], problems
    assert registry.history(models) == history_before

    # rerun: completes, cleans the leftover, and the champion moves only through a logged promotion
    from orchestration.definitions import defs

    run = defs.resolve_job_def("persona_retrain").execute_in_process(
        instance=injected["instance"], tags={"persona/trigger": "drift_retrain_sensor"}, raise_on_error=False)
    assert run.success
    assert registry.verify(models) == []
    new = sorted(set(p.name for p in (models / "versions").iterdir()) - set(versions_before))
    assert len(new) == 1
    promoted = run.output_for_node("promoted_model")
    hist = registry.history(models)
    if registry.champion_version(models) != champion:
        assert hist[-1]["version"] == new[0] == Path(promoted).name and hist[-1]["previous"] == champion
    else:
        assert hist == history_before


def test_unchanged_data_and_a_resample_of_the_reference_request_nothing(pipeline_run, tmp_path):
    settings, _ = pipeline_run
    config = copy_deployment(settings, tmp_path / "copy")
    old = os.environ.get("PERSONA_CONFIG")
    os.environ["PERSONA_CONFIG"] = str(config)
    try:
        with DagsterInstance.ephemeral() as instance:
            mats = run_monitors(config, instance)
            fd, perf = mats["feature_drift"], mats["champion_performance"]
            print(f"\nunchanged data: drift share {fd['drift_share']:.3f}, vs training {fd['drift_share_vs_training']:.3f}, "
                  f"NDCG@10 {perf['ndcg@10']:.4f} vs champion {perf['champion_ndcg@10']:.4f}")
            assert fd["drift_share"] == 0.0 and perf["ndcg_drop"] == pytest.approx(0.0)
            result = evaluate_sensor(instance)
            assert not result.run_requests and "no retraining" in result.skip_reason.skip_message

            # control: a bootstrap resample of the champion's reference window, reported as a drift check
            champ = registry.champion_dir(tmp_path / "copy" / "models")
            ref = mon.champion_reference(champ)
            rng = np.random.default_rng(0)
            cur = ref[rng.integers(0, len(ref), len(ref))]
            d = settings["drift"]
            res = mon.feature_drift(ref, cur, baseline_X=mon.champion_reference(champ, "training"),
                                    share_threshold=d["share_threshold"], column_threshold=d["column_threshold"],
                                    natural_factor=d["natural_factor"])
            print(f"resample of the reference: drift share {res.share_drifted:.3f} {res.drifted_columns}")
            assert res.share_drifted < d["share_threshold"] and res.share_drifted < 0.05
            instance.report_runless_asset_event(AssetMaterialization(
                "feature_drift", metadata={"drift_share": res.share_drifted, "champion": "control",
                                           "data_fingerprint": "resample"}))
            result = evaluate_sensor(instance, cursor=result.cursor)
            assert not result.run_requests and "no retraining" in result.skip_reason.skip_message
    finally:
        if old is None:
            os.environ.pop("PERSONA_CONFIG", None)
        else:
            os.environ["PERSONA_CONFIG"] = old


def test_no_monitor_run_yet_means_no_request():
    with DagsterInstance.ephemeral() as instance:
        result = evaluate_sensor(instance)
    assert not result.run_requests and "no feature_drift" in result.skip_reason.skip_message
