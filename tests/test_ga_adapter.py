"""The GA adapter on the real embedded file: mapping, junk categories, variants, quarantine, reconciliation."""

import json

import pandas as pd
import pytest

from data_contracts.adapters import SourceError, ga_merch
from data_contracts.schema import EVENT_TYPES, EVENTS_SCHEMA, ITEMS_SCHEMA
from tests.conftest import GA_PATH


@pytest.fixture(scope="module")
def loaded():
    return ga_merch.load(GA_PATH)


def test_reconciles_rows_in_with_accepted_plus_quarantined(loaded):
    assert loaded.rows_in == 420_737
    assert loaded.accepted + loaded.quarantined == loaded.rows_in
    assert loaded.reasons() == {"duplicate_row": 388}
    assert loaded.repairs == {"zero_price_to_null": 93}
    assert loaded.events.schema.equals(EVENTS_SCHEMA, check_metadata=False)
    assert loaded.items.schema.equals(ITEMS_SCHEMA, check_metadata=False)


def test_quarantined_rows_keep_lineage_and_the_raw_row(loaded):
    q = loaded.quarantine.to_pandas()
    raw = pd.read_parquet(GA_PATH)
    row = q.iloc[0]
    original = json.loads(row["raw"])
    assert original["product_sku"] == raw.loc[row["source_row"], "product_sku"]
    assert row["source_file"] == GA_PATH.name


def test_variants_map_to_their_style_and_junk_categories_are_null(loaded):
    assert ga_merch.item_id_for_sku("GGOEGAAX0104") == ga_merch.item_id_for_sku("GGOEGAAQ010415") == "GGOE-0104"
    assert ga_merch.item_id_for_sku("A12345") == "A12345"
    assert ga_merch.clean_category("(not set)") is None
    assert ga_merch.clean_category("${escCatTitle}") is None
    assert ga_merch.clean_category("Home/Apparel/Men's/Men's-T-Shirts/") == "Apparel/Men's/Men's-T-Shirts"
    items = loaded.items.to_pandas()
    assert len(items) == 378
    cats = items["category_path"].dropna()
    assert not cats.str.contains(r"\(not set\)|escCatTitle").any()
    tee = items.set_index("item_id").loc["GGOE-0104"]
    assert "Hero Tee" in tee["title"] and tee["brand"] == "Google"


def test_every_ga_action_maps_to_its_canonical_event_type(loaded):
    counts = loaded.events.to_pandas()["event_type"].value_counts().sort_index()
    expected = pd.read_parquet(GA_PATH).drop_duplicates()["event_type"].map(ga_merch.ACTIONS).value_counts().sort_index()
    assert set(counts.index) <= set(EVENT_TYPES)
    pd.testing.assert_series_equal(counts, expected, check_names=False)


def test_missing_required_column_is_a_file_level_error_naming_file_and_column(tmp_path):
    bad = tmp_path / "bad.parquet"
    pd.read_parquet(GA_PATH).drop(columns=["product_sku"]).head(100).to_parquet(bad)
    with pytest.raises(SourceError, match=r"bad\.parquet.*product_sku"):
        ga_merch.load(bad)
    with pytest.raises(SourceError, match="not found"):
        ga_merch.load(tmp_path / "missing.parquet")
