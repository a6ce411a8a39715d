"""`persona ingest PATH (--format NAME | --mapping FILE.yaml) [--json]`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from persona.cli import main
from tests.conftest import GA_PATH, ROOT

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DATASETS = ROOT.parent / "shared" / "datasets"


def test_json_output_with_a_mapping(tmp_path, capsys):
    lines = (FIXTURES / "shop_events.csv").read_text().splitlines()
    path = tmp_path / "shop.csv"
    path.write_text("\n".join([*lines, lines[3], lines[1].replace(",pageview,", ",wishlist,")]) + "\n")
    code = main(["ingest", str(path), "--mapping", str(FIXTURES / "shop_mapping.yaml"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {k: out[k] for k in ("rows_in", "accepted", "quarantined", "reasons")} == {
        "rows_in": 14, "accepted": 12, "quarantined": 2,
        "reasons": {"duplicate_row": 1, "unknown_event_type": 1}}


def test_show_lists_the_quarantined_rows_with_file_row_reason_and_field(tmp_path, capsys):
    lines = (FIXTURES / "shop_events.csv").read_text().splitlines()
    path = tmp_path / "shop.csv"
    path.write_text("\n".join([*lines, lines[3], lines[1].replace(",pageview,", ",wishlist,")]) + "\n")
    args = ["ingest", str(path), "--mapping", str(FIXTURES / "shop_mapping.yaml"), "--show", "5"]
    assert main([*args, "--json"]) == 0
    sample = json.loads(capsys.readouterr().out)["quarantine_sample"]
    assert [(q["source_file"], q["source_row"], q["reason"], q["field"]) for q in sample] == [
        ("shop.csv", 12, "duplicate_row", None), ("shop.csv", 13, "unknown_event_type", "action")]
    assert json.loads(sample[1]["raw"])["action"] == "wishlist"
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "shop.csv row 13: unknown_event_type (action)" in text and "wishlist" in text


def test_text_output_lists_reasons_and_repairs_on_the_embedded_ga_file(capsys):
    code = main(["ingest", str(GA_PATH), "--format", "ga_merch_product_events"])
    out = capsys.readouterr().out
    assert code == 0
    assert "420,737 rows in" in out and "388 quarantined" in out
    assert "duplicate_row" in out and "zero_price_to_null" in out


@pytest.mark.skipif(not DATASETS.is_dir(), reason="shared datasets absent")
def test_real_rees46_file_json(capsys):
    code = main(["ingest", str(DATASETS / "rees46_ecommerce_sample" / "2019-Oct_head_17k.csv.gz"),
                 "--format", "rees46_events", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and (out["rows_in"], out["accepted"], out["quarantined"]) == (17_434, 17_429, 5)


def test_missing_column_exits_non_zero_naming_file_and_column(tmp_path, capsys):
    lines = (FIXTURES / "shop_events.csv").read_text().splitlines()
    path = tmp_path / "no_sku.csv"
    path.write_text("\n".join(ln.replace(",sku,", ",product_code,") for ln in lines) + "\n")
    code = main(["ingest", str(path), "--mapping", str(FIXTURES / "shop_mapping.yaml"), "--json"])
    captured = capsys.readouterr()
    assert code != 0 and captured.out == ""
    assert "no_sku.csv" in captured.err and "'sku'" in captured.err
    assert "Traceback" not in captured.err


def test_unknown_format_and_unreadable_file(tmp_path, capsys):
    assert main(["ingest", str(GA_PATH), "--format", "nope"]) != 0
    assert "unknown adapter 'nope'" in capsys.readouterr().err
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"\x00\x01not parquet")
    assert main(["ingest", str(junk), "--format", "ga_merch_product_events"]) != 0
    assert "junk.parquet" in capsys.readouterr().err


def test_format_or_mapping_is_required_and_the_command_runs_as_a_program():
    proc = subprocess.run([sys.executable, "-m", "persona.cli", "ingest", str(FIXTURES / "shop_events.csv")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "--format" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "persona.cli", "ingest", str(FIXTURES / "shop_events.csv"),
                           "--mapping", str(FIXTURES / "shop_mapping.yaml"), "--json"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accepted"] == 12


def test_quality_limits_come_from_the_config_file(tmp_path, capsys):
    lines = (FIXTURES / "shop_events.csv").read_text().splitlines()
    cfg = tmp_path / "persona.yaml"
    cfg.write_text("quality:\n  max_text_lengths: {title: 20}\n  max_quarantine_rate_by_source: {example_shop: 0.0}\n")
    path = tmp_path / "shop.csv"
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    code = main(["--config", str(cfg), "ingest", str(path), "--mapping", str(FIXTURES / "shop_mapping.yaml"), "--json"])
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert code == 0 and out["repairs"]["truncated_title"] == 6            # every item title cut to 20
    assert out["max_quarantine_rate"] == 0.0 and out["within_threshold"] is False
    assert "above 0.00%" in captured.err
    cfg.write_text("quality:\n  max_text_lengths: {title: -1}\n")
    assert main(["--config", str(cfg), "ingest", str(path), "--mapping", str(FIXTURES / "shop_mapping.yaml")]) == 2
    assert "quality.max_text_lengths" in capsys.readouterr().err
