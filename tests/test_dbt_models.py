"""The dbt project on a real slice of the Google Merchandise Store log, checked against pandas.

A slice of ~3,000 visitors goes through the real adapter (`ga_merch.load`) into a DuckDB file in
tmp_path; the real `dbt build` (models + all data tests) runs on it in a subprocess, and the marts
are compared with independent pandas recomputations. The GA log has no anonymous traffic, so the
user id of every 10th visitor in the slice is blanked to exercise the anonymous paths
(excluded from users/interactions, counted in items, covisitation per session).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from data_contracts.adapters import ga_merch
from persona.warehouse import read_df, replace_tables

ROOT = Path(__file__).resolve().parents[1]
DBT_DIR = ROOT / "dbt_project"
DBT = Path(sys.executable).with_name("dbt")
DATA = ROOT / "data" / "ga_merch_store" / "product_events_2016-08_2016-10.parquet"

N_USERS = 3000
HALF_LIFE_DAYS = 14.0
WEIGHTS = {"search": 0.5, "view": 1, "click": 0.5, "cart": 3, "remove_from_cart": -1, "checkout": 3,
           "purchase": 5, "return": -2, "review": 2}
EVENT_TYPES = list(WEIGHTS)
COVIS_WINDOW_HOURS = 24
COVIS_MIN_COUNT = 2

pytestmark = pytest.mark.skipif(not DATA.exists() or not DBT.exists(), reason="needs the GA parquet and dbt")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("dbt")
    raw = pq.read_table(DATA)
    visitors = np.sort(pc.unique(raw.column("full_visitor_id")).to_numpy(zero_copy_only=False))
    chosen = visitors[:: max(1, len(visitors) // N_USERS)][:N_USERS]
    sliced = raw.filter(pc.is_in(raw.column("full_visitor_id"), value_set=pa.array(chosen, type=pa.string())))
    slice_path = tmp / DATA.name
    pq.write_table(sliced, slice_path)

    result = ga_merch.load(slice_path)
    events = result.events.to_pandas()
    anonymous = set(chosen[::10])
    events["user_id"] = events["user_id"].where(~events["user_id"].isin(anonymous), None)
    items = result.items.to_pandas()

    db = tmp / "persona.duckdb"
    replace_tables(db, {"raw_events": events, "raw_items": items})

    proc = run_dbt(["build"], db, tmp)
    return {"db": db, "events": events, "items": items, "stdout": proc.stdout}


def run_dbt(args: list[str], db: Path, tmp: Path) -> subprocess.CompletedProcess:
    """`dbt <args>` in a subprocess (dbt-duckdb keeps the file open while its process lives) against
    the warehouse file `db`, with target/log paths under `tmp`; asserts success."""
    env = {**os.environ, "PERSONA_WAREHOUSE_PATH": str(db), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
           "DO_NOT_TRACK": "1"}
    proc = subprocess.run(
        [str(DBT), *args, "--profiles-dir", str(DBT_DIR), "--project-dir", str(DBT_DIR),
         "--target-path", str(tmp / "target"), "--log-path", str(tmp / "logs")],
        cwd=DBT_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"dbt {args[0]} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return proc


def table(wh: dict, name: str) -> pd.DataFrame:
    return read_df(wh["db"], f"select * from {name}")


def test_build_ran_every_model_and_test(warehouse):
    out = warehouse["stdout"]
    assert "ERROR=0" in out and "SKIP=0" in out and "WARN=0" in out
    for model in ["stg_events", "stg_items", "int_events_as_of", "fct_events", "fct_sessions",
                  "fct_user_item_interactions", "dim_users", "dim_items", "fct_item_covisitation"]:
        assert f"main.{model}" in out
    for test in ["assert_covisitation_symmetric", "assert_interactions_match_events"]:
        assert f"PASS {test}" in out


def test_fct_events_and_sessions(warehouse):
    ev = warehouse["events"]
    fct = table(warehouse, "fct_events")
    assert len(fct) == len(ev) and set(fct["event_id"]) == set(ev["event_id"])
    assert fct["is_identified"].sum() == ev["user_id"].notna().sum()

    sessions = table(warehouse, "fct_sessions").set_index("session_id")
    assert len(sessions) == ev["session_id"].nunique()
    assert sessions["n_events"].sum() == len(ev)
    buy = ev[ev["event_type"] == "purchase"]
    sid = buy["session_id"].value_counts().index[0]
    expected_revenue = (buy.loc[buy["session_id"] == sid, "price"]
                        * buy.loc[buy["session_id"] == sid, "quantity"].fillna(1)).sum()
    assert sessions.loc[sid, "revenue"] == pytest.approx(expected_revenue)
    assert bool(sessions.loc[sid, "has_purchase"])
    s_ev = ev[ev["session_id"] == sid]
    assert sessions.loc[sid, "n_items"] == s_ev["item_id"].nunique()
    assert sessions.loc[sid, "n_checkout"] == (s_ev["event_type"] == "checkout").sum()
    assert sessions.loc[sid, "duration_seconds"] == int((s_ev["ts"].max() - s_ev["ts"].min()).total_seconds())


def test_dim_users_are_the_identified_users(warehouse):
    ev = warehouse["events"]
    users = table(warehouse, "dim_users").set_index("user_id")
    identified = ev[ev["user_id"].notna()]
    assert len(users) == identified["user_id"].nunique()
    assert 0 < len(users) < ev["session_id"].nunique()
    as_of = ev["ts"].max()
    uid = identified["user_id"].value_counts().index[0]
    u = identified[identified["user_id"] == uid]
    row = users.loc[uid]
    assert row["n_events"] == len(u)
    assert row["n_sessions"] == u["session_id"].nunique()
    assert row["active_days"] == u["ts"].dt.date.nunique()
    assert row["frequency"] == u.loc[u["event_type"] == "purchase", "session_id"].nunique()
    p = u[u["event_type"] == "purchase"]
    assert row["monetary"] == pytest.approx((p["price"] * p["quantity"].fillna(1)).sum())
    assert row["recency_days"] == pytest.approx((as_of - u["ts"].max()).total_seconds() / 86400, abs=1e-4)


def test_interactions_equal_pandas_recomputation(warehouse):
    ev = warehouse["events"]
    ident = ev[ev["user_id"].notna() & ev["item_id"].notna()].copy()
    as_of = ev["ts"].max()
    # Second precision, as in the model (dbt.datediff in seconds).
    age = (as_of.floor("s") - ident["ts"].dt.floor("s")).dt.total_seconds() / 86400
    ident["score"] = ident["event_type"].map(WEIGHTS) * np.power(0.5, age / HALF_LIFE_DAYS)
    counts = pd.crosstab([ident["user_id"], ident["item_id"]], ident["event_type"])
    scores = ident.groupby(["user_id", "item_id"])["score"].sum()

    inter = table(warehouse, "fct_user_item_interactions").set_index(["user_id", "item_id"])
    assert len(inter) == len(counts)
    some_users = ident["user_id"].value_counts().index[:5]
    for uid in some_users:
        got = inter.loc[uid]
        want = counts.loc[uid]
        assert sorted(got.index) == sorted(want.index)
        for item_id in want.index:
            for t in EVENT_TYPES:
                expected = int(want.loc[item_id, t]) if t in want.columns else 0
                assert got.loc[item_id, f"n_{t}"] == expected, (uid, item_id, t)
            assert got.loc[item_id, "weighted_score"] == pytest.approx(scores.loc[(uid, item_id)], rel=1e-6, abs=1e-9)
            pair = ident[(ident["user_id"] == uid) & (ident["item_id"] == item_id)]
            assert got.loc[item_id, "first_ts"] == pair["ts"].min()
            assert got.loc[item_id, "last_ts"] == pair["ts"].max()
    assert inter["n_events"].sum() == len(ident)


def test_dim_items_rates_and_one_item_by_hand(warehouse):
    ev = warehouse["events"]
    items = table(warehouse, "dim_items").set_index("item_id")
    assert set(items.index) == set(warehouse["items"]["item_id"])
    for col in ["view_to_cart_rate", "cart_to_purchase_rate", "view_to_purchase_rate"]:
        rates = items[col].dropna()
        assert len(rates) > 0 and rates.between(0, 1).all(), col

    item_ev = ev[ev["item_id"].notna()]
    iid = item_ev.loc[item_ev["event_type"] == "purchase", "item_id"].value_counts().index[0]
    e = item_ev[item_ev["item_id"] == iid]
    row = items.loc[iid]
    as_of = ev["ts"].max()
    assert row["popularity_all_time"] == len(e)
    assert row["popularity_7d"] == (e["ts"] > as_of - pd.Timedelta(days=7)).sum()
    assert row["popularity_30d"] == (e["ts"] > as_of - pd.Timedelta(days=30)).sum()
    assert row["n_views"] == (e["event_type"] == "view").sum()
    assert row["n_clicks"] == (e["event_type"] == "click").sum()
    assert row["n_carts"] == (e["event_type"] == "cart").sum()
    assert row["n_purchases"] == (e["event_type"] == "purchase").sum()
    per_session = e.assign(one=1).pivot_table(index="session_id", columns="event_type", values="one",
                                              aggfunc="max", fill_value=0)
    viewed = per_session.get("view", 0) > 0
    carted = per_session.get("cart", 0) > 0
    bought = per_session.get("purchase", 0) > 0
    assert row["view_to_cart_rate"] == pytest.approx((viewed & carted).sum() / viewed.sum())
    assert row["cart_to_purchase_rate"] == pytest.approx((carted & bought).sum() / carted.sum())
    assert row["view_to_purchase_rate"] == pytest.approx((viewed & bought).sum() / viewed.sum())


def test_covisitation_symmetric_and_equal_to_pandas(warehouse):
    ev = warehouse["events"]
    covis = table(warehouse, "fct_item_covisitation")
    assert len(covis) > 0
    assert (covis["item_id"] != covis["other_item_id"]).all()
    mirror = covis.merge(covis, left_on=["item_id", "other_item_id"], right_on=["other_item_id", "item_id"],
                         suffixes=("", "_m"))
    assert len(mirror) == len(covis)
    assert (mirror["n_pairs"] == mirror["n_pairs_m"]).all()
    assert np.allclose(mirror["weight"], mirror["weight_m"])
    assert covis["weight"].between(0, 1).all() and (covis["n_pairs"] >= COVIS_MIN_COUNT).all()

    e = ev[ev["item_id"].notna()].copy()
    e["actor"] = np.where(e["user_id"].notna(), "u:" + e["user_id"].fillna(""), "s:" + e["session_id"])
    first = e.groupby(["actor", "item_id"], as_index=False)["ts"].min()
    # The anonymous visitors are there and counted per session.
    assert first["actor"].str.startswith("s:").any()
    pairs = first.merge(first, on="actor", suffixes=("", "_o"))
    pairs = pairs[(pairs["item_id"] != pairs["item_id_o"])
                  & ((pairs["ts"].dt.floor("s") - pairs["ts_o"].dt.floor("s")).abs()
                     <= pd.Timedelta(hours=COVIS_WINDOW_HOURS))]
    n_pairs = pairs.groupby(["item_id", "item_id_o"]).size()
    n_pairs = n_pairs[n_pairs >= COVIS_MIN_COUNT]
    got = covis.set_index(["item_id", "other_item_id"])["n_pairs"]
    assert len(got) == len(n_pairs)
    assert got.sort_index().to_dict() == {k: int(v) for k, v in n_pairs.sort_index().items()}
    n_actors = first.groupby("item_id").size()
    a, b = n_pairs.sort_values(ascending=False).index[0]
    top = covis[(covis["item_id"] == a) & (covis["other_item_id"] == b)].iloc[0]
    assert top["weight"] == pytest.approx(top["n_pairs"] / math.sqrt(n_actors[a] * n_actors[b]))


def test_as_of_var_gives_point_in_time_features(warehouse, tmp_path):
    """`--vars as_of` (models only; their tests ran above) limits every feature mart to earlier events and measures ages to it."""
    import shutil

    ev = warehouse["events"]
    as_of = pd.Timestamp("2016-09-15 12:00:00")
    db = tmp_path / "as_of.duckdb"
    shutil.copy(warehouse["db"], db)
    run_dbt(["run", "--select", "int_events_as_of+", "--vars", f"{{as_of: '{as_of}'}}"], db, tmp_path)

    past = ev[ev["ts"] <= as_of]
    users = read_df(db, "select * from dim_users")
    assert len(users) == past["user_id"].nunique() < ev["user_id"].nunique()
    assert (users["as_of_ts"] == as_of).all() and (users["last_ts"] <= as_of).all()
    inter = read_df(db, "select * from fct_user_item_interactions").set_index(["user_id", "item_id"])
    ident = past[past["user_id"].notna()]
    assert inter["n_events"].sum() == len(ident)
    uid, iid = ident.groupby(["user_id", "item_id"]).size().idxmax()
    pair = ident[(ident["user_id"] == uid) & (ident["item_id"] == iid)]
    age = (as_of - pair["ts"].dt.floor("s")).dt.total_seconds() / 86400
    want = (pair["event_type"].map(WEIGHTS) * np.power(0.5, age / HALF_LIFE_DAYS)).sum()
    assert inter.loc[(uid, iid), "weighted_score"] == pytest.approx(want, rel=1e-6)
    items = read_df(db, "select * from dim_items").set_index("item_id")
    e = past[past["item_id"] == iid]
    assert items.loc[iid, "popularity_all_time"] == len(e)
    assert items.loc[iid, "popularity_7d"] == (e["ts"] > as_of - pd.Timedelta(days=7)).sum()
    # fct_events is history, not a feature: it keeps everything.
    assert read_df(db, "select count(*) as n from fct_events")["n"][0] == len(ev)


# --------------------------------------------------------------------------------------------------
# Incremental marts: a new day's file, loaded on top of the history, gives the full rebuild's tables.
# --------------------------------------------------------------------------------------------------

INCREMENTAL = ["fct_events", "fct_sessions"]


def _load_raw(files: list[Path], anonymous: set) -> dict:
    from data_contracts.adapters import load_source

    result = load_source(files, "ga_merch_product_events")
    events = result.events.to_pandas()
    events["user_id"] = events["user_id"].where(~events["user_id"].isin(anonymous), None)
    return {"raw_events": events, "raw_items": result.items.to_pandas()}


def _sorted(df: pd.DataFrame, key: str) -> pd.DataFrame:
    return df.drop(columns=["loaded_at"]).sort_values(key).reset_index(drop=True)


@pytest.fixture(scope="module")
def new_day(tmp_path_factory) -> dict:
    """The slice as two files: the history before the last UTC day, and that day's events. One warehouse
    is built from both at once; the other from the history, then incrementally with the day added."""
    tmp = tmp_path_factory.mktemp("incremental")
    raw = pq.read_table(DATA)
    visitors = np.sort(pc.unique(raw.column("full_visitor_id")).to_numpy(zero_copy_only=False))
    chosen = visitors[:: max(1, len(visitors) // N_USERS)][:N_USERS]
    sliced = raw.filter(pc.is_in(raw.column("full_visitor_id"), value_set=pa.array(chosen, type=pa.string())))
    ts = sliced.column("event_time").to_pandas()
    cut = ts.max().floor("D")
    history, day = tmp / "ga_history.parquet", tmp / f"ga_{cut:%Y-%m-%d}.parquet"
    pq.write_table(sliced.filter(pa.array((ts < cut).to_numpy())), history)
    pq.write_table(sliced.filter(pa.array((ts >= cut).to_numpy())), day)
    anonymous = set(chosen[::10])
    before, after = _load_raw([history], anonymous), _load_raw([history, day], anonymous)

    full, inc = tmp / "full.duckdb", tmp / "incremental.duckdb"
    replace_tables(full, after)
    run_dbt(["run", "--select", "+fct_sessions"], full, tmp / "f")
    replace_tables(inc, before)
    run_dbt(["run", "--select", "+fct_sessions"], inc, tmp / "i")
    first_load = read_df(inc, "select max(loaded_at) as t from fct_events")["t"][0]
    replace_tables(inc, after)   # as the ingest asset does: the raw tables now hold history + the new day
    proc = run_dbt(["build", "--select", "+fct_sessions", "--indirect-selection", "cautious"], inc, tmp / "i")
    return {"full": full, "inc": inc, "cut": cut.tz_localize(None), "before": before, "after": after,
            "first_load": first_load, "stdout": proc.stdout}


def test_incremental_run_after_a_new_day_equals_a_full_rebuild_row_by_row(new_day):
    ev = new_day["after"]["raw_events"]
    cut = new_day["cut"]
    spans = ev.groupby("session_id")["ts"].agg(["min", "max"])
    assert ((spans["min"] < cut) & (spans["max"] >= cut)).sum() >= 1   # a session crosses the day boundary
    for name, key in (("fct_events", "event_id"), ("fct_sessions", "session_id")):
        full = _sorted(read_df(new_day["full"], f"select * from {name}"), key)
        inc = _sorted(read_df(new_day["inc"], f"select * from {name}"), key)
        floats = [c for c in full.columns if pd.api.types.is_float_dtype(full[c])]
        pd.testing.assert_frame_equal(inc.drop(columns=floats), full.drop(columns=floats), check_exact=True)
        # sums of floats (session revenue) depend on the order rows are scanned: equal to the last bit or two
        for c in floats:
            np.testing.assert_allclose(inc[c].to_numpy(), full[c].to_numpy(), rtol=1e-12, atol=0, err_msg=c)
            assert (inc[c].isna() == full[c].isna()).all()
    assert "ERROR=0" in new_day["stdout"] and "PASS assert_sessions_cover_all_events" in new_day["stdout"]


def test_incremental_run_writes_only_the_new_day_and_its_sessions(new_day):
    """History stays as first written: the second run wrote exactly the new day's events, and recomputed
    exactly the sessions holding one of them (the one crossing midnight included)."""
    ev, cut = new_day["after"]["raw_events"], new_day["cut"]
    new = ev[ev["ts"] >= cut]
    assert 0 < len(new) < len(ev) // 100
    fct = read_df(new_day["inc"], "select event_id, loaded_at from fct_events")
    assert set(fct.loc[fct["loaded_at"] > new_day["first_load"], "event_id"]) == set(new["event_id"])
    sessions = read_df(new_day["inc"], "select session_id, loaded_at from fct_sessions")
    assert set(sessions.loc[sessions["loaded_at"] > new_day["first_load"], "session_id"]) == set(new["session_id"])


def test_dbt_asset_asks_for_a_full_refresh_only_when_raw_events_did_not_just_grow(new_day, tmp_path):
    import shutil

    import duckdb

    from orchestration.assets.dbt import full_refresh_reason

    assert full_refresh_reason(new_day["inc"]) is None                   # raw only grew: incremental is exact
    assert full_refresh_reason(tmp_path / "absent.duckdb") is None       # first build
    cases = {"delete from raw_events where event_id = (select min(event_id) from raw_events)": "1 events of "
             "fct_events are no longer in raw_events",
             "update raw_events set session_id = session_id || '-x' where event_id = (select min(event_id) "
             "from raw_events)": "1 events of fct_events changed in raw_events",
             "alter table fct_events drop column loaded_at": "before the incremental model"}
    for sql, reason in cases.items():
        db = tmp_path / "case.duckdb"
        shutil.copy(new_day["inc"], db)
        con = duckdb.connect(str(db))
        con.execute(sql)
        con.close()
        assert reason in full_refresh_reason(db)
