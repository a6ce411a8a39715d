"""Registry history, rollback, crash leftovers, the CLI, and the gate refusing a challenger trained on shuffled labels."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ml import registry
from persona import cli


def _write_ok(folder):
    (folder / "ranker.onnx").write_bytes(b"model")


def _versions(tmp_path, n):
    out = []
    for i in range(n):
        out.append(registry.create_version(tmp_path, _write_ok, {"data_hash": f"h{i}"},
                                           {"ranker": {"ndcg@10": 0.3 + i / 100}}, ["f1"]).name)
    return out


def test_promotions_are_logged_and_rollback_restores_the_previous_champion(tmp_path):
    v1, v2, v3 = _versions(tmp_path, 3)
    registry.promote(tmp_path, v1, reason="first")
    registry.promote(tmp_path, v2, reason="better")
    registry.promote(tmp_path, v3, reason="better again")
    hist = registry.history(tmp_path)
    assert [(h["action"], h["version"], h["previous"]) for h in hist] == [
        ("promote", v1, None), ("promote", v2, v1), ("promote", v3, v2)]
    assert registry.rollback(tmp_path) == v2
    assert registry.champion_version(tmp_path) == v2
    assert registry.history(tmp_path)[-1] | {"at": None} == {"at": None, "action": "rollback", "version": v2,
                                                              "previous": v3, "reason": f"rollback from {v3}"}
    assert registry.rollback(tmp_path) == v1  # v2 had replaced v1
    with pytest.raises(registry.RegistryError, match="nothing to roll back to"):
        registry.rollback(tmp_path)
    assert registry.rollback(tmp_path, to=v3) == v3
    with pytest.raises(registry.RegistryError, match="already the champion"):
        registry.rollback(tmp_path, to=v3)
    assert registry.verify(tmp_path) == []


def test_a_torn_history_line_and_a_crash_before_the_pointer_moved_are_tolerated(tmp_path):
    v1, v2 = _versions(tmp_path, 2)
    registry.promote(tmp_path, v1)
    # a crash after the history line was written but before the pointer moved: one line too many
    with open(tmp_path / registry.HISTORY, "a") as fh:
        fh.write(json.dumps({"at": "x", "action": "promote", "version": v2, "previous": v1}) + "\n")
        fh.write('{"at": "torn')
    assert registry.champion_version(tmp_path) == v1
    assert len(registry.history(tmp_path)) == 2
    assert registry.previous_champion(tmp_path) is None  # v1 replaced nothing
    assert registry.verify(tmp_path) == []
    registry.promote(tmp_path, v2)  # the next line starts on a fresh line, after the torn one
    assert registry.history(tmp_path)[-1]["version"] == v2 and registry.previous_champion(tmp_path) == v1


def test_staging_left_by_a_dead_writer_is_reported_then_removed_by_the_next_write(tmp_path):
    (v1,) = _versions(tmp_path, 1)
    registry.promote(tmp_path, v1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f".staging-v20990101T000000000000-abc-pid{dead.stdout.strip()}"
    leftover.mkdir()
    (leftover / "ranker.onnx").write_bytes(b"half")
    alive = tmp_path / f".staging-v20990101T000000000001-abc-pid{os.getppid()}"  # a live writer's folder stays
    alive.mkdir()
    problems = registry.verify(tmp_path)
    assert len(problems) == 1 and leftover.name in problems[0]
    assert [v["version"] for v in registry.list_versions(tmp_path)] == [v1]
    _versions(tmp_path, 1)
    assert not leftover.exists() and alive.exists()
    shutil.rmtree(alive)
    assert registry.verify(tmp_path) == []


def test_incomplete_version_and_dangling_pointer_are_reported(tmp_path):
    (v1,) = _versions(tmp_path, 1)
    registry.promote(tmp_path, v1)
    (tmp_path / "versions" / v1 / "ranker.onnx").unlink()
    (tmp_path / registry.POINTER).write_text("v-gone\n")
    problems = registry.verify(tmp_path)
    assert any("v-gone" in p for p in problems) and any("incomplete" in p for p in problems)


def test_cli_models_list_promote_rollback(tmp_path, capsys):
    v1, v2 = _versions(tmp_path, 2)
    base = ["models", "--models-dir", str(tmp_path)]
    assert cli.main(base + ["promote", v1]) == 0
    assert cli.main(base + ["promote", v2, "--reason", "manual"]) == 0
    assert cli.main(base + ["list"]) == 0
    out = capsys.readouterr().out
    assert f"* {v2}" in out and f"  {v1}" in out
    assert cli.main(base + ["rollback"]) == 0
    assert registry.champion_version(tmp_path) == v1
    assert cli.main(base + ["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert listed["champion"] == v1 and listed["problems"] == [] and len(listed["history"]) == 3
    assert cli.main(base + ["promote", "v-missing"]) == 1
    assert "no such complete version" in capsys.readouterr().err
    assert registry.champion_version(tmp_path) == v1


@pytest.mark.slow
def test_a_challenger_trained_on_shuffled_labels_is_refused_and_the_champion_keeps_serving(
        pipeline_run, tmp_path, monkeypatch):
    from dagster import build_asset_context

    import ml.pipeline
    from ml.monitoring import gate_versions
    from ml.replay import train_version
    from orchestration.assets.common import load_embeddings, load_events, load_items
    from orchestration.assets.ranking import promoted_model
    from orchestration.resources import PersonaConfig, Warehouse

    settings, _ = pipeline_run
    models = tmp_path / "models"
    shutil.copytree(settings.models_dir, models)
    champion = registry.champion_version(models)
    wh = Warehouse()
    events, items = load_events(wh, settings), load_items(wh, settings)
    item_ids, matrix = load_embeddings(wh, settings)

    real_train = ml.pipeline.train_ranker

    def shuffled(train, valid, cfg, log=print):
        train.y = np.random.default_rng(0).permutation(train.y)
        return real_train(train, valid, cfg, log)

    monkeypatch.setattr(ml.pipeline, "train_ranker", shuffled)
    bad = train_version(models, events, items, item_ids, matrix, settings.data, {"note": "shuffled labels"},
                        log=lambda m: None)
    g = gate_versions(bad, models / "versions" / champion, tolerance=float(settings["registry"]["promotion_tolerance"]))
    print(f"\nshuffled-label challenger NDCG@10 {g.challenger_ndcg:.4f} vs champion {g.champion_ndcg:.4f}: {g.reason}")
    assert not g.promote and g.challenger_ndcg < g.champion_ndcg

    # the Dagster gate asset itself, pointed at the copy: refuses, alerts, returns the old champion
    cfg_path = tmp_path / "persona.yaml"
    cfg_path.write_text(settings.source_file.read_text().replace(str(settings.models_dir), str(models))
                        .replace(str(settings.alerts_path), str(tmp_path / "alerts.jsonl")))
    ctx = build_asset_context(resources={"persona": PersonaConfig(config_file=str(cfg_path))})
    out = promoted_model(ctx, ranker_model=str(bad))
    assert out.metadata["promoted"].value is False
    assert out.value == str(models / "versions" / champion)
    assert registry.champion_version(models) == champion
    assert "refused" in (tmp_path / "alerts.jsonl").read_text()
    assert registry.verify(models) == []

    # a champion made under another pseudonymization key cannot serve this warehouse's users (all would look
    # unknown): the gate lets the weaker challenger, made under the current key, replace it
    for d, key in ((models / "versions" / champion, "0" * 16), (bad, "f" * 16)):
        m = json.loads((d / "manifest.json").read_text())
        (d / "manifest.json").write_text(json.dumps(dict(m, pseudonym_key=key)))
    g2 = gate_versions(bad, models / "versions" / champion, tolerance=float(settings["registry"]["promotion_tolerance"]))
    assert g2.promote and "another pseudonymization key" in g2.reason and g2.challenger_ndcg < g2.champion_ndcg
