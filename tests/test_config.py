"""Configuration: file, environment overrides, relative paths, clear errors."""

import pytest

from persona.config import ConfigError, load_settings


def test_environment_overrides_the_file_with_typed_values(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("split:\n  test_days: 7\npaths:\n  warehouse_dir: wh\n")
    s = load_settings(cfg, environ={"PERSONA__SPLIT__VALID_DAYS": "3", "PERSONA__ALERTS__WEBHOOK_URL": "null"})
    assert s["split"]["test_days"] == 7 and s["split"]["valid_days"] == 3
    assert s["alerts"]["webhook_url"] is None
    assert s.warehouse_path == tmp_path / "wh" / "persona.duckdb"  # relative to the config file


def test_missing_or_invalid_config_names_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: [teleport]\n")
    with pytest.raises(ConfigError, match="targets"):
        load_settings(bad, environ={})
    bad.write_text("split:\n  test_days: -1\n")
    with pytest.raises(ConfigError, match="split.test_days"):
        load_settings(bad, environ={})
