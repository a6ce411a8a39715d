"""Tag rules: the one junk rule, and four real GA users' tags worked out by hand from their raw events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml import tags as T
from ml.profiles import build_profiles
from persona.config import DEFAULTS

GA_FILE = Path(__file__).resolve().parent.parent / "data/ga_merch_store/product_events_2016-08_2016-10.parquet"
CFG = DEFAULTS["profiles"]  # weights: click 0.5, view 1, cart 3, checkout 3, purchase 5, remove -1; half-life 14 d
AS_OF = pd.Timestamp("2016-10-01")
HAND_USERS = ["004567662055259815", "5304536055151752154", "0381212454446989174", "0477713488948200677"]


@pytest.mark.parametrize("value", [
    None, np.nan, pd.NA, "", "   ", "(not set)", "not set", "(none)", "null", "NaN", "undefined", "Unknown", "N/A",
    "-", "Unavailable", "(Unavailable)", "[unavailable]", "Not Available", "${escCatTitle}", "{{ category }}",
    "%CATEGORY%", "Uncategorized"])
def test_placeholder_values_are_junk(value):
    assert T.is_junk(value)
    assert T.clean_brand(value) is None
    assert T.category_key(value) is None


@pytest.mark.parametrize("value", ["Google", "Apparel", "Drinkware/Mugs and Cups", "Nest-USA", "N64", "Notebooks"])
def test_real_values_are_not_junk(value):
    assert not T.is_junk(value)


def test_junk_levels_inside_a_path_are_skipped_and_never_named():
    assert T.category_key("Home/Unavailable/Apparel/Men's/") == "Apparel/Men's"
    assert T.category_key("Apparel/(not set)/Men's") == "Apparel/Men's"
    assert T.category_key("Home/${escCatTitle}") is None
    assert T.category_key("All Products/N/A") is None
    assert T.category_key("Shop by Brand/Unavailable") is None


@pytest.fixture(scope="module")
def hand_users():
    """The four users' real events (adapter output) and the real catalog."""
    from data_contracts.adapters import ga_merch

    r = ga_merch.load(GA_FILE)
    events, items = r.events.to_pandas(), r.items.to_pandas()
    return events[events["user_id"].isin(HAND_USERS)].reset_index(drop=True), items


def test_four_real_users_get_the_tags_computed_by_hand(hand_users):
    events, items = hand_users
    # Only these four users are profiled, so the activity tertiles are theirs (see below). Tags do not
    # depend on the vectors: a fixed random unit matrix stands in for the encoder.
    ids = items["item_id"].astype(str).tolist()
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(len(ids), 8)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    assert events.groupby("user_id").size().to_dict() == dict(zip(HAND_USERS, [9, 9, 6, 8]))
    assert (events["ts"] < AS_OF).all()

    # Catalog price tertiles over the 377 priced items: the 1/3 quantile sits between the 126th and 127th
    # cheapest prices (both 16.99), the 2/3 quantile between the 251st and 252nd (both 23.99).
    assert T.price_tertiles(items["price"]) == (16.99, 23.99)
    # Events in the last 30 days (since 2016-09-01 00:00): 9, 9, 6 and 0. Among users with any,
    # sorted [6, 9, 9]: 1/3 quantile = 6 + (2/3)(9 - 6) = 8, 2/3 quantile = 9 + (1/3)(9 - 9) = 9,
    # so 9 -> medium (> 8, not > 9), 6 -> low, 0 -> low.
    profiles, _ = build_profiles(events, items, ids, matrix, AS_OF, CFG)
    got = profiles.set_index("user_id")["tags"].to_dict()

    expected = {
        # 2016-09-24 02:01, one session: GGOE-0279 (Apparel/Women's, Google, 16.99) click x3 + view x3 + cart
        # = 3*0.5 + 3*1 + 3 = 7.5; GGOE-0104 (Apparel/Men's, Google, 16.99) click + view = 1.5 (same decay).
        # Average price (16.99 + 16.99) / 2 = 16.99: not below the lower tertile 16.99 -> mid.
        # 9 recent events -> medium. First event 6.9 days ago (<= 14) -> new.
        # Cart at 09-24 02:01 is inside the 7-day window (from 09-24 00:00), no purchase after -> intent.
        "004567662055259815": ["category:Apparel/Women's", "category:Apparel/Men's", "brand:Google", "price:mid",
                               "activity:medium", "lifecycle:new", "intent:cart_open"],
        # 09-16: GGOE-0206 (Shop by Brand/YouTube: brand navigation, no category; YouTube, 1.99) click + view.
        # 09-19: GGOE-0325 (Apparel/Men's, YouTube, 18.99) view, click, cart, checkout x2, purchase x2.
        # Price (1.99 + 18.99) / 2 = 10.49 < 16.99 -> budget. 9 recent events -> medium.
        # First event 14.2 days ago (> 14, not new), last 11.2 days ago (<= 14) -> active.
        # Its cart/checkout (09-19) is before the intent window and followed by a purchase -> no intent.
        "5304536055151752154": ["category:Apparel/Men's", "brand:YouTube", "price:budget", "activity:medium",
                                "lifecycle:active"],
        # 09-01 17:25-17:31: GGOE-0153 (Drinkware, no brand, 24.99) click + view + cart - remove = 0.5+1+3-1 = 3.5;
        # GGOE-0565 (Bags, no brand, 79.99) click + view = 1.5. No brand -> no brand tag.
        # Price (24.99 + 79.99) / 2 = 52.49 > 23.99 -> premium. 6 recent events -> low.
        # Last event 29.3 days ago: > 14, <= 45 -> at_risk. Cart 29 days ago -> outside the intent window.
        "0381212454446989174": ["category:Drinkware", "category:Bags", "price:premium", "activity:low",
                                "lifecycle:at_risk"],
        # 08-06 06:44-06:53, click + view (1.5) on each of: GGOE-0222 (Electronics, 1.50) at 06:44:56,
        # GGOE-0166 (Drinkware, 3.50) at 06:45:51, GGOE-0569 and GGOE-0358 (Apparel/Men's, Google, 119.99 and
        # 55.99). Apparel/Men's 1.5 + 1.5 = 3.0 first; Drinkware and Electronics 1.5 each, Drinkware 55 s later
        # so it decays a little less and ranks above Electronics.
        # Price (1.50 + 3.50 + 119.99 + 55.99) / 4 = 45.245 -> premium. No event since 09-01 -> low.
        # Last event 55.7 days ago (> 45) -> lapsed.
        "0477713488948200677": ["category:Apparel/Men's", "category:Drinkware", "category:Electronics",
                                "brand:Google", "price:premium", "activity:low", "lifecycle:lapsed"],
    }
    assert got == expected
