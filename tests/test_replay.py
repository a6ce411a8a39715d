"""`persona replay`: step cuts, a short real replay on the test slice, the plot, and the UCI skip."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from ml import registry
from ml.replay import ReplayUnavailable, plot_replay, resolve_source, run_replay, step_ends
from persona import cli
from persona.config import load_settings


def test_step_ends_count_back_from_the_last_event_and_keep_enough_history():
    ev = pd.DataFrame({"ts": pd.to_datetime(["2016-08-01 10:00", "2016-10-31 23:00"])})
    ends = step_ends(ev, 7, 35, 14)
    assert ends[-1] == pd.Timestamp("2016-11-01")
    assert all((b - a) == pd.Timedelta(days=7) for a, b in zip(ends, ends[1:]))
    assert ends[0] - pd.Timedelta(days=49) >= pd.Timestamp("2016-08-01 10:00")
    assert ends[0] - pd.Timedelta(days=56) < pd.Timestamp("2016-08-01 10:00")
    assert step_ends(ev, 7, 35, 14, max_steps=2) == ends[-2:]


def test_plot_marks_retrain_and_promote(tmp_path):
    steps = [{"cut": f"2016-10-{d:02d}", "drift_share": s, "ndcg@10": n, "challenger_ndcg@10": c,
              "retrained": r, "promoted": p}
             for d, s, n, c, r, p in [(1, None, 0.30, 0.30, True, True), (8, 0.1, 0.31, None, False, False),
                                      (15, 0.4, 0.25, 0.33, True, True), (22, 0.35, 0.33, 0.28, True, False)]]
    png = plot_replay({"source": "ga", "step_days": 7, "thresholds": {"share_threshold": 0.3}, "steps": steps},
                      tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_uci_is_skipped_with_a_clear_message_without_its_adapter_or_its_data(capsys, tmp_path, monkeypatch):
    missing = str(tmp_path / "missing.csv.gz")
    assert cli.main(["replay", "--source", "uci", "--path", missing, "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "skipping uci" in err
    if importlib.util.find_spec("data_contracts.adapters.uci_retail") is not None:
        assert "not found" in err

    import ml.replay

    real = ml.replay.importlib.import_module

    def no_uci(name, *a, **k):
        if name.endswith("uci_retail"):
            raise ModuleNotFoundError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(ml.replay.importlib, "import_module", no_uci)
    with pytest.raises(ReplayUnavailable, match="uci_retail.py"):
        resolve_source(load_settings(), "uci")
    assert cli.main(["replay", "--source", "uci", "--out", str(tmp_path / "out")]) == 0
    assert "adapter (data_contracts/adapters/uci_retail.py) is not in this checkout" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_uci_replay_reads_the_shared_dataset_beside_the_repository_by_default():
    from persona.config import PROJECT_ROOT

    settings = load_settings(PROJECT_ROOT / "persona.yaml")  # the repository's own config, not a test's copy
    shared = settings.root.parent / "shared" / "datasets" / "uci_online_retail" / "online_retail.csv.gz"
    if not shared.exists():
        pytest.skip(f"shared datasets not found at {shared}")
    src = resolve_source(settings, "uci")
    assert (src.name, src.adapter, src.path) == ("uci", "uci_online_retail", shared)


@pytest.mark.slow
def test_a_short_replay_on_real_data_writes_records_and_a_plot(pipeline_run, tmp_path):
    settings, _ = pipeline_run
    payload = run_replay(settings, "ga", path=str(settings.source_path), out_dir=tmp_path, max_steps=2,
                         log=lambda m: None)
    saved = json.loads((tmp_path / "replay.json").read_text())
    assert saved["steps"] == json.loads(json.dumps(payload["steps"]))
    assert saved["complete"] and saved["steps_planned"] == 2
    steps = saved["steps"]
    assert len(steps) == 2
    for s in steps:
        assert {"drift_share", "ndcg@10", "retrained", "promoted"} <= set(s)
    first, second = steps
    assert first["retrained"] and first["promoted"] and first["drift_share"] is None
    assert first["trigger"] == ["bootstrap: no champion yet"]
    assert 0.0 <= second["drift_share"] <= 1.0 and 0.0 <= second["ndcg@10"] <= 1.0
    # the natural-movement allowance only raises column thresholds: never more drifted columns than the plain share
    assert second["drift_share"] <= second["drift_share_plain"] <= 1.0 and second["n_columns"] > 0
    assert second["retrained"] == bool(second["trigger"])
    assert second["champion_before"] == first["champion_after"]
    assert (tmp_path / "replay.png").stat().st_size > 20_000
    models = tmp_path / "replay_models"
    assert saved["registry_consistent"] and registry.verify(models) == []
    assert registry.champion_version(models) == second["champion_after"]
    assert [h["version"] for h in registry.history(models)] == [s["challenger"] for s in steps if s["promoted"]]
    manifest = json.loads((models / "versions" / first["challenger"] / "manifest.json").read_text())
    assert {"training_cutoff", "data_hash", "code_version", "split"} <= set(manifest)
    assert np.isfinite(first["challenger_ndcg@10"])
