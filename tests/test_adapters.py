"""Every adapter on its real dataset (../shared/datasets): counts match the datasets README.

The shared datasets live beside the repository (`<repo>/../shared/datasets`); these tests skip only when
that folder is absent.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from data_contracts.adapters import ADAPTERS, load_source
from data_contracts.adapters import amazon_reviews, ga_sessions, generic, icecat, rees46, uci_retail
from data_contracts.schema import EVENT_TYPES, EVENTS_SCHEMA, ITEMS_SCHEMA, REASONS
from tests.conftest import ROOT

DATASETS = ROOT.parent / "shared" / "datasets"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
needs_datasets = pytest.mark.skipif(not DATASETS.is_dir(), reason=f"shared datasets not found at {DATASETS}")

UCI = DATASETS / "uci_online_retail" / "online_retail.csv.gz"
REES_OCT = DATASETS / "rees46_ecommerce_sample" / "2019-Oct_head_17k.csv.gz"
REES_NOV = DATASETS / "rees46_ecommerce_sample" / "2019-Nov_head_683.csv.gz"
AMAZON = DATASETS / "amazon_fashion_reviews" / "AMAZON_FASHION_5.json.gz"
ICECAT = DATASETS / "icecat_products"
GA_RAW = DATASETS / "google_analytics_merch_store" / "raw_ga_sessions_2016-08"
GA_DERIVED = DATASETS / "google_analytics_merch_store" / "product_events_2016-08_2016-10.parquet"


def _contract_ok(result) -> None:
    assert result.events.schema.equals(EVENTS_SCHEMA, check_metadata=False)
    assert result.items.schema.equals(ITEMS_SCHEMA, check_metadata=False)
    assert result.accepted + result.quarantined == result.rows_in
    assert set(result.reasons()) <= set(REASONS)
    ev = result.events.to_pandas()
    assert ev["event_id"].is_unique
    assert set(ev["event_type"]) <= set(EVENT_TYPES)


def test_every_adapter_is_registered():
    assert {"ga_merch_product_events", "ga_sessions", "uci_online_retail", "rees46_events", "amazon_reviews",
            "icecat_products", "mapping"} <= set(ADAPTERS)


# --- UCI Online Retail -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def uci():
    return uci_retail.load(UCI)


@needs_datasets
def test_uci_full_file_reconciles_with_the_readme(uci):
    _contract_ok(uci)
    assert uci.rows_in == 541_909                               # README: 541,909 invoice lines
    assert uci.reasons() == {"duplicate_row": 5_268,            # README: 5,268 exact duplicate lines
                             "non_product_line": 2_940,          # POST, DOT, M, C2, D, S, B, fees, vouchers
                             "nonpositive_quantity": 1_336}      # 10,624 lines <= 0 minus 9,288 cancellations
    assert uci.accepted == 532_365
    q = uci.quarantine.to_pandas()
    raw = [json.loads(r) for r in q["raw"]]
    ev = uci.events.to_pandas()
    # lines without a customer are anonymous events, accepted, never quarantined for it
    assert ev["user_id"].isna().sum() + sum(r["CustomerID"] is None for r in raw) == 135_080
    # cancellations are returns with a positive quantity; every C line is a return or quarantined
    returns = ev[ev["event_type"] == "return"]
    assert (returns["quantity"] > 0).all() and returns["session_id"].str.startswith("C").all()
    assert len(returns) + sum(r["InvoiceNo"].startswith("C") for r in raw) == 9_288
    assert uci.repairs["negative_quantity_to_return"] == len(returns)
    assert ev["user_id"].dropna().str.fullmatch(r"\d+").all()      # 17850.0 -> 17850
    # UK local time -> UTC: summer timestamps move back one hour
    assert ev["ts"].min() == pd.Timestamp("2010-12-01 08:26:00")
    assert ev["ts"].max() == pd.Timestamp("2011-12-09 12:50:00")
    items = uci.items.to_pandas().set_index("item_id")
    assert items.loc["85123A", "title"] == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert not items.index.isin(list(uci_retail.NON_PRODUCT_CODES)).any()


@needs_datasets
def test_uci_converts_british_summer_time_to_utc(tmp_path):
    lines = gzip.open(UCI, "rt").read().splitlines()
    header, summer = lines[0], [ln for ln in lines[1:] if ",2011-07-01 10:" in ln][:3]
    path = tmp_path / "uci_summer.csv"
    path.write_text("\n".join([header, *summer]) + "\n")
    ev = uci_retail.load(path).events.to_pandas()
    assert (ev["ts"].dt.hour == 9).all()      # 10:xx BST = 09:xx UTC


# --- REES46 ------------------------------------------------------------------------------------------

@needs_datasets
def test_rees46_heads_match_the_readme():
    oct_ = rees46.load(REES_OCT)
    _contract_ok(oct_)
    assert (oct_.rows_in, oct_.quarantined, oct_.reasons()) == (17_434, 5, {"duplicate_row": 5})
    assert oct_.repairs == {"zero_price_to_null": 19}
    ev = oct_.events.to_pandas()
    # README: 4,504 users, 6,493 products, 5,066 sessions; view 17,055 / cart 165 / purchase 214 (dups removed)
    assert (ev["user_id"].nunique(), ev["item_id"].nunique(), ev["session_id"].nunique()) == (4_504, 6_493, 5_066)
    counts = ev["event_type"].value_counts().to_dict()
    dup_types = pd.Series([json.loads(r)["event_type"] for r in oct_.quarantine.to_pandas()["raw"]]).value_counts()
    assert {k: counts.get(k, 0) + int(dup_types.get(k, 0)) for k in ("view", "cart", "purchase")} == \
        {"view": 17_055, "cart": 165, "purchase": 214}
    assert ev["ts"].min() == pd.Timestamp("2019-10-01 00:00:00") and ev["ts"].max() == pd.Timestamp("2019-10-01 02:50:00")
    items = oct_.items.to_pandas()
    assert len(items) == 6_493
    assert items["category_path"].notna().sum() and not items["category_path"].dropna().str.contains(r"\.").any()
    nov = rees46.load(REES_NOV)
    _contract_ok(nov)
    assert (nov.rows_in, nov.accepted, nov.quarantined) == (683, 683, 0)
    assert nov.events.to_pandas()["event_type"].value_counts().to_dict() == {"view": 678, "cart": 3, "purchase": 2}


# --- Amazon reviews ----------------------------------------------------------------------------------

@needs_datasets
def test_amazon_reviews_match_the_readme():
    r = amazon_reviews.load(AMAZON)
    _contract_ok(r)
    assert r.rows_in == 3_176
    # README: 89 exact duplicate (user, item, time, text) reviews
    assert r.reasons() == {"duplicate_row": 68, "duplicate_event": 21}
    ev = r.events.to_pandas()
    assert (ev["event_type"] == "review").all()
    assert ev["rating"].between(1, 5).all()
    assert (ev["user_id"].nunique(), ev["item_id"].nunique()) == (406, 31)
    assert ev["ts"].min() == pd.Timestamp("2009-12-25") and ev["ts"].max() == pd.Timestamp("2018-07-05")
    assert ev["review_text"].notna().sum() > 3_000
    assert len(r.items) == 31


# --- Icecat ------------------------------------------------------------------------------------------

@needs_datasets
def test_icecat_catalog_is_items_only_and_complete():
    r = load_source(ICECAT, "icecat_products")            # the folder: 1.json.zip ... 4.json.zip
    assert r.unit == "items" and r.events.num_rows == 0
    assert (r.rows_in, r.accepted, r.quarantined) == (19_406, 19_406, 0)      # README: 19,406 products
    assert r.file_rows == {"1.json.zip": 5_000, "2.json.zip": 5_000, "3.json.zip": 5_000, "4.json.zip": 4_406}
    items = r.items.to_pandas()
    assert items["item_id"].is_unique and items["title"].notna().all() and items["image_url"].notna().all()
    assert items["description"].isna().sum() == 721                           # README: 721 without short_description
    assert items["brand"].nunique() == 161                                    # README: 161 suppliers
    xerox = items.set_index("item_id").loc["3920564"]
    assert xerox["price"] == pytest.approx(49.95) and xerox["brand"] == "Xerox"   # cents -> dollars


# --- raw nested GA sessions --------------------------------------------------------------------------

@needs_datasets
def test_raw_ga_sessions_flatten_to_exactly_the_derived_product_events():
    day = GA_RAW / "ga_sessions_20160801.parquet"
    flat = ga_sessions.flatten(day)
    derived = pd.read_parquet(GA_DERIVED)
    cols = ["session_id", "event_time", "hit_number", "event_type", "product_sku", "product_name",
            "product_category", "price_usd", "quantity", "transaction_id"]
    mine = flat[cols].astype(str).value_counts()
    theirs = derived[cols].astype(str).value_counts()
    joined = mine.to_frame("mine").join(theirs.to_frame("derived"), how="left")
    assert len(flat) == 5_217
    assert (joined["mine"] == joined["derived"]).all()        # every flattened row, with its multiplicity
    r = ga_sessions.load(day)
    _contract_ok(r)
    assert r.reasons() == {"duplicate_row": 45}
    ev = r.events.to_pandas()
    assert ev["item_id"].str.startswith("GGOE-").mean() > 0.9   # SKUs -> style items, as in ga_merch


@needs_datasets
def test_raw_ga_august_session_count_matches_the_readme():
    files = sorted(GA_RAW.glob("ga_sessions_*.parquet"))
    assert len(files) == 31
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in files) == 74_759    # README: 74,759 sessions
    r = load_source(GA_RAW / "ga_sessions_20160802.parquet", "ga_sessions")
    assert r.accepted + r.quarantined == r.rows_in > 0


# --- generic YAML mapping ----------------------------------------------------------------------------

def test_generic_mapping_on_a_shop_export():
    r = load_source(FIXTURES / "shop_events.csv", mapping=FIXTURES / "shop_mapping.yaml")
    _contract_ok(r)
    assert (r.rows_in, r.accepted, r.quarantined) == (12, 12, 0)
    ev = r.events.to_pandas()
    assert (ev["source"] == "example_shop").all()
    assert ev["event_type"].value_counts().to_dict() == {"view": 6, "cart": 3, "purchase": 2, "search": 1}
    assert ev.loc[ev["event_type"] == "search", "query"].tolist() == ["water bottle"]
    assert ev["user_id"].isna().sum() == 2       # anonymous visitor
    items = r.items.to_pandas().set_index("item_id")
    assert items.loc["GGOEGAAX0104", "category_path"] == "Apparel/Men's/T-Shirts"


@needs_datasets
def test_generic_mapping_reads_a_real_rees46_file_like_the_dedicated_adapter(tmp_path):
    mapping = {"source": "rees46_via_mapping",
               "columns": {"ts": "event_time", "event_type": "event_type", "item_id": "product_id",
                           "user_id": "user_id", "session_id": "user_session", "price": "price",
                           "category_path": "category_code", "brand": "brand"},
               "category_separator": "."}
    via_map = generic.load(REES_NOV, mapping=mapping)
    dedicated = rees46.load(REES_NOV)
    assert (via_map.rows_in, via_map.accepted, via_map.quarantined) == (683, 683, 0)
    a = via_map.events.to_pandas().drop(columns=["event_id", "source"])
    b = dedicated.events.to_pandas().drop(columns=["event_id", "source"])
    pd.testing.assert_frame_equal(a, b)
