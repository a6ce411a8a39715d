"""Great Expectations suites on the real GA Merchandise Store events (a slice, to stay fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_contracts import expectations as X
from data_contracts.adapters import ga_merch
from persona.config import PROJECT_ROOT

GA_PATH = PROJECT_ROOT / "data/ga_merch_store/product_events_2016-08_2016-10.parquet"
SLICE = 20_000
QUALITY = {"earliest_ts": "2000-01-01", "max_future_skew_hours": 24}

pytestmark = pytest.mark.skipif(not GA_PATH.exists(), reason=f"{GA_PATH} not present")


@pytest.fixture(scope="module")
def ga():
    r = ga_merch.load(GA_PATH)
    return r.events.to_pandas().head(SLICE).copy(), r.items.to_pandas()


def _failed(summary: X.ValidationSummary) -> dict[tuple[str, str | None], dict]:
    return {(r["expectation"], r["column"]): r for r in summary.failed}


def test_real_events_and_items_pass(ga):
    events, items = ga
    ev = X.validate(events, "raw_events", **QUALITY)
    assert ev.success, ev.to_markdown(only_failed=True)
    assert ev.n_rows == SLICE and not ev.failed
    kinds = {(r["expectation"], r["column"]) for r in ev.results}
    assert ("expect_column_values_to_be_unique", "event_id") in kinds
    assert ("expect_column_values_to_be_in_set", "event_type") in kinds
    cond = [r for r in ev.results if r["column"] == "item_id" and r["condition"]]
    assert cond and "search" in cond[0]["condition"]

    it = X.validate(items, "raw_items", **QUALITY)
    assert it.success, it.to_markdown(only_failed=True)
    assert it.n_rows == len(items) > 100
    md = ev.to_markdown()
    assert md.startswith("**raw_events**: PASSED") and "| expectation |" in md


def test_corrupted_events_fail_with_exact_counts(ga):
    events, _ = ga
    bad = events.copy()
    bad.loc[bad.index[:10], "event_type"] = "teleport"            # 10 unknown event types
    bad.loc[bad.index[100], "event_id"] = bad.loc[bad.index[101], "event_id"]  # 1 duplicate -> 2 rows
    bad.loc[bad.index[200:203], "price"] = -1.0                    # 3 negative prices
    bad.loc[bad.index[300], "ts"] = pd.NaT                         # 1 null ts
    bad.loc[bad.index[301:303], "ts"] = pd.Timestamp("2099-01-01")  # 2 in the far future
    bad.loc[bad.index[304], "ts"] = pd.Timestamp("1999-12-31")      # 1 before earliest_ts
    carts = bad.index[(bad["event_type"] == "cart") & bad["quantity"].notna()]
    bad.loc[carts[:4], "quantity"] = 0.0                           # 4 non-positive cart quantities
    views = bad.index[bad["event_type"] == "view"]
    bad.loc[views[:5], "item_id"] = None                           # 5 view events without an item
    searches = bad.index[bad["event_type"] == "click"][-3:]
    bad.loc[searches, "event_type"] = "search"                     # search may lack an item: not counted
    bad.loc[searches, "item_id"] = None
    bad.loc[bad.index[400:402], "rating"] = 7.0                    # 2 ratings out of 1-5

    s = X.validate(bad, "raw_events", **QUALITY)
    assert not s.success
    f = _failed(s)
    expected = {
        ("expect_column_values_to_be_in_set", "event_type"): 10,
        ("expect_column_values_to_be_unique", "event_id"): 2,
        ("expect_column_values_to_be_between", "price"): 3,
        ("expect_column_values_to_not_be_null", "ts"): 1,
        ("expect_column_values_to_be_between", "ts"): 3,
        ("expect_column_values_to_be_between", "quantity"): 4,
        ("expect_column_values_to_not_be_null", "item_id"): 5,
        ("expect_column_values_to_be_between", "rating"): 2,
    }
    assert {k: f[k]["unexpected_count"] for k in f} == expected
    assert f[("expect_column_values_to_be_in_set", "event_type")]["samples"][0] == "teleport"
    assert -1.0 in f[("expect_column_values_to_be_between", "price")]["samples"]
    assert abs(f[("expect_column_values_to_be_in_set", "event_type")]["unexpected_percent"] - 100 * 10 / SLICE) < 1e-9
    md = s.to_markdown(only_failed=True)
    assert "FAILED (8 of" in md and "teleport" in md
    json.dumps(s.to_dict())  # metadata-ready


def test_future_skew_window_is_relative_to_now(ga):
    events, _ = ga
    bad = events.head(1000).copy()
    now = pd.Timestamp("2016-10-01")
    s = X.validate(bad, "raw_events", earliest_ts="2016-08-15", max_future_skew_hours=48, now=now.to_pydatetime())
    ts = bad["ts"]
    expected = int(((ts < pd.Timestamp("2016-08-15")) | (ts > now + pd.Timedelta(hours=48))).sum())
    assert expected > 0
    assert _failed(s)[("expect_column_values_to_be_between", "ts")]["unexpected_count"] == expected


def test_corrupted_items_and_missing_column(ga):
    _, items = ga
    bad = items.copy()
    bad.loc[bad.index[1], "item_id"] = bad.loc[bad.index[2], "item_id"]  # duplicate -> 2 rows
    bad.loc[bad.index[5], "item_id"] = None
    bad.loc[bad.index[6:8], "price"] = -5.0
    bad = bad.drop(columns=["image_url"])
    s = X.validate(bad, "raw_items", **QUALITY)
    f = _failed(s)
    assert {k: f[k]["unexpected_count"] for k in f} == {
        ("expect_column_values_to_be_unique", "item_id"): 2,
        ("expect_column_values_to_not_be_null", "item_id"): 1,
        ("expect_column_values_to_be_between", "price"): 2,
        ("expect_column_to_exist", "image_url"): None,
    }


def test_missing_events_column_is_a_failure_not_a_crash(ga):
    events, _ = ga
    s = X.validate(events.head(500).drop(columns=["price"]), "raw_events", **QUALITY)
    f = _failed(s)
    assert ("expect_column_to_exist", "price") in f
    assert f[("expect_column_values_to_be_between", "price")]["exception"]


def test_suite_files_match_code(tmp_path):
    written = X.write_suites(tmp_path)
    assert [p.name for p in written] == ["raw_events.json", "raw_items.json", "fct_events.json", "fct_sessions.json",
                                         "fct_user_item_interactions.json", "dim_users.json", "dim_items.json",
                                         "fct_item_covisitation.json"]
    for p in written:
        committed = X.SUITES_DIR / p.name
        assert committed.exists(), f"run `python -m data_contracts.expectations` to write {committed}"
        assert json.loads(committed.read_text()) == json.loads(p.read_text()), f"{committed} is stale"
    events = json.loads((X.SUITES_DIR / "raw_events.json").read_text())
    types = [e["type"] for e in events["expectations"]]
    assert types.count("expect_column_to_exist") == 14
    ts = [e for e in events["expectations"] if e["kwargs"].get("column") == "ts" and "min_value" in e["kwargs"]]
    assert ts[0]["kwargs"]["min_value"] == {"$PARAMETER": "earliest_ts"}


def test_unknown_suite_rejected():
    with pytest.raises(ValueError, match="unknown suite"):
        X.validate(pd.DataFrame({"a": [1]}), "nope", **QUALITY)


def _sessions() -> pd.DataFrame:
    """Five sessions as fct_sessions has them: one duplicated key, one 30 h long, one with 3,000 events."""
    return pd.DataFrame({
        "session_id": ["a", "b", "c", "d", "a"],
        "n_events": [3, 1, 3000, 2, 4],
        "duration_seconds": [60, 0, 600, 30 * 3600, 10],
    })


def test_mart_suite_critical_half_catches_a_duplicate_key_and_ignores_plausibility():
    s = X.validate(_sessions(), "fct_sessions", severity="critical")
    assert s.suite == "fct_sessions.critical" and not s.success
    failed = _failed(s)
    assert set(failed) == {("expect_column_values_to_be_unique", "session_id")}
    assert failed[("expect_column_values_to_be_unique", "session_id")]["unexpected_count"] == 2
    assert {r["severity"] for r in s.results} == {"critical"}
    ok = X.validate(_sessions().drop_duplicates("session_id"), "fct_sessions", severity="critical")
    assert ok.success and len(ok.results) == 5


def test_mart_suite_warning_half_uses_the_configured_limits():
    s = X.validate(_sessions(), "fct_sessions", severity="warning")
    failed = _failed(s)
    assert {r["severity"] for r in s.results} == {"warning"}
    long = failed[("expect_column_values_to_be_between", "duration_seconds")]
    assert long["unexpected_count"] == 1 and long["samples"] == [30 * 3600]
    assert long["kwargs"]["max_value"] == 24 * 3600.0                     # default max_session_hours 24
    assert failed[("expect_column_values_to_be_between", "n_events")]["samples"] == [3000]
    loose = X.validate(_sessions(), "fct_sessions", severity="warning",
                       mart_limits={"max_session_hours": 48, "max_session_events": 5000})
    assert loose.success


def test_anonymous_share_and_row_floor_on_fct_events():
    events = pd.DataFrame({"event_id": ["1", "2", "3", "4"], "user_id": ["u", None, None, None],
                           "session_id": ["s"] * 4, "ts": pd.to_datetime(["2016-08-01"] * 4),
                           "event_type": ["view"] * 4, "item_id": ["i"] * 4, "price": [1.0, 2.0, None, 3.0]})
    warn = X.validate(events, "fct_events", severity="warning")       # 75% anonymous > 50%
    assert set(_failed(warn)) == {("expect_column_proportion_of_non_null_values_to_be_between", "user_id")}
    assert X.validate(events, "fct_events", severity="warning", mart_limits={"max_anonymous_share": 0.75}).success
    assert X.validate(events, "fct_events", severity="critical").success
    floor = X.validate(events, "fct_events", severity="critical", mart_limits={"min_rows": 5})
    assert set(_failed(floor)) == {("expect_table_row_count_to_be_between", None)}


def test_every_mart_suite_reads_only_its_columns_and_keys_are_critical():
    assert X.suite_columns("fct_sessions", "warning") == ["duration_seconds", "n_events"]
    assert X.suite_columns("fct_user_item_interactions", "critical") == ["user_id", "item_id", "n_events",
                                                                          "weighted_score"]
    assert not X.has_expectations("fct_item_covisitation", "warning")
    for mart in X.MART_SUITES:
        suite = json.loads((X.SUITES_DIR / f"{mart}.json").read_text())
        uniques = [e for e in suite["expectations"] if "unique" in e["type"]]
        assert uniques and all(e["severity"] == "critical" for e in uniques), mart
