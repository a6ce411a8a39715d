"""Registry: versions appear whole or not at all; promotion is an atomic pointer swap; the gate refuses worse."""

import json

import pytest

from ml import registry


def _write_ok(folder):
    (folder / "ranker.onnx").write_bytes(b"model")


def test_a_version_is_complete_and_promotion_moves_the_pointer(tmp_path):
    v1 = registry.create_version(tmp_path, _write_ok, {"data_hash": "abc"}, {"ranker": {"ndcg@10": 0.3}}, ["f1"])
    assert {p.name for p in v1.iterdir()} == {"ranker.onnx", "manifest.json", "metrics.json", "features.json"}
    assert json.loads((v1 / "manifest.json").read_text())["version"] == v1.name
    assert registry.champion_version(tmp_path) is None
    registry.promote(tmp_path, v1.name)
    assert registry.champion_dir(tmp_path) == v1
    v2 = registry.create_version(tmp_path, _write_ok, {"data_hash": "def"}, {"ranker": {"ndcg@10": 0.4}}, ["f1"])
    registry.promote(tmp_path, v2.name)
    assert registry.champion_version(tmp_path) == v2.name
    listed = registry.list_versions(tmp_path)
    assert [v["champion"] for v in listed] == [False, True]


def test_a_crash_while_writing_leaves_no_version_and_the_champion_in_place(tmp_path):
    v1 = registry.create_version(tmp_path, _write_ok, {}, {}, [])
    registry.promote(tmp_path, v1.name)

    def crash(folder):
        (folder / "ranker.onnx").write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        registry.create_version(tmp_path, crash, {}, {}, [])
    assert [p.name for p in (tmp_path / "versions").iterdir()] == [v1.name]
    assert not list(tmp_path.glob(".staging-*"))
    assert registry.champion_version(tmp_path) == v1.name


def test_promoting_a_missing_version_fails_and_keeps_the_champion(tmp_path):
    v1 = registry.create_version(tmp_path, _write_ok, {}, {}, [])
    registry.promote(tmp_path, v1.name)
    with pytest.raises(registry.RegistryError, match="no such complete version"):
        registry.promote(tmp_path, "v-missing")
    assert registry.champion_version(tmp_path) == v1.name


def test_gate_refuses_a_worse_challenger_beyond_tolerance():
    assert registry.gate({"ndcg@10": 0.30}, None)[0]
    assert registry.gate({"ndcg@10": 0.30}, {"ndcg@10": 0.30})[0]
    assert not registry.gate({"ndcg@10": 0.29}, {"ndcg@10": 0.30})[0]
    assert registry.gate({"ndcg@10": 0.29}, {"ndcg@10": 0.30}, tolerance=0.02)[0]
