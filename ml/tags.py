"""Readable profile tags: each rule is a small pure function over per-user facts.

Tags are what a marketer reads ("category:Apparel/Men's", "price:mid", "lifecycle:at_risk"), so
every rule is deliberately simple, documented here, and computed only from events before `as_of`
(callers filter; nothing here looks at the clock).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from ml.embeddings import is_missing

CATEGORY_DEPTH = 2
# Values shops and analytics tools write when a field is unknown, compared after `_normalise`
# (lower case, outer brackets/quotes/spaces stripped, so "(not set)" and "[Unavailable]" both match).
JUNK_VALUES = frozenset({"", "not set", "notset", "none", "null", "nil", "nan", "undefined", "unknown", "n/a", "na",
                         "n.a.", "-", "--", "?", "unavailable", "not available", "not_available", "missing",
                         "no category", "uncategorized", "uncategorised", "default category"})
# Junk words that contain the path separator themselves ("Apparel/N/A" must not become "N/A").
_SLASHED_JUNK = re.compile(r"(?i)(?:^|(?<=/))\s*[(\[]?(?:"
                           + "|".join(re.escape(v) for v in sorted(JUNK_VALUES) if "/" in v)
                           + r")[)\]]?\s*(?=/|$)")
# Unrendered template syntax ("${escCatTitle}", "{{ category }}", "%CATEGORY%", "[[cat]]").
TEMPLATE_MARKERS = ("${", "{{", "}}", "{%", "[[", "<%")
SITE_ROOTS = {"home", "all", "all products"}
# Navigation trees that group by brand, not by product kind: the brand tag covers them.
BRAND_NAVIGATION_ROOTS = {"shop by brand", "brands", "brand"}
PRICE_BANDS = ("budget", "mid", "premium")
ACTIVITY_LEVELS = ("low", "medium", "high")
LIFECYCLE_STAGES = ("new", "active", "at_risk", "lapsed")
INTENT_TAG = "intent:cart_open"


def _normalise(value: Any) -> str:
    return str(value).strip().strip("()[]<>\"' ").strip().lower()


def is_junk(value: Any) -> bool:
    """True for values that mean "unknown" and must never become a tag or an interest label.

    The one junk rule for categories, category levels and brands: missing values, placeholder words
    ("(not set)", "Unavailable", "N/A", ...), unrendered templates ("${escCatTitle}") and
    "%NAME%"-style macros.
    """
    if is_missing(value):
        return True
    text = str(value).strip()
    if any(m in text for m in TEMPLATE_MARKERS):
        return True
    if len(text) > 2 and text.startswith("%") and text.endswith("%"):
        return True
    return _normalise(text) in JUNK_VALUES


def category_key(category_path: Any, depth: int = CATEGORY_DEPTH) -> str | None:
    """The category a tag names: the first `depth` levels of the '/'-separated path.

    Two levels ("Apparel/Men's") are specific enough to act on and broad enough to be shared by
    many users. Junk (see `is_junk`: null, "(not set)", "Unavailable", "${escCatTitle}") anywhere
    in the path, a bare root such as "Home", and brand-navigation paths ("Shop by Brand/YouTube")
    give None or are skipped, so junk never becomes a tag.
    """
    if is_junk(category_path):
        return None
    levels = [p.strip() for p in _SLASHED_JUNK.sub("", str(category_path)).split("/") if p.strip()]
    while levels and levels[0].lower() in SITE_ROOTS:
        levels = levels[1:]
    levels = [p for p in levels if not is_junk(p)]
    if not levels or levels[0].lower() in BRAND_NAVIGATION_ROOTS:
        return None
    return "/".join(levels[:depth])


def clean_brand(brand: Any) -> str | None:
    """A brand worth a tag, or None for junk (`is_junk`)."""
    return None if is_junk(brand) else str(brand).strip()


def top_keys(users: np.ndarray, keys: np.ndarray, weights: np.ndarray, n: int) -> dict[Any, list[str]]:
    """Per user, the `n` keys with the largest summed (decayed) weight, ties broken by name.

    Only keys with a positive total count: a category the user only removed from the cart is not an
    interest. Rows whose key is None are ignored.
    """
    df = pd.DataFrame({"u": users, "k": keys, "w": weights})
    df = df[df["k"].notna()]
    if df.empty:
        return {}
    g = df.groupby(["u", "k"], sort=False)["w"].sum().reset_index()
    g = g[g["w"] > 0].sort_values(["u", "w", "k"], ascending=[True, False, True])
    g = g.groupby("u", sort=False).head(n)
    u, k = g["u"].to_numpy(), g["k"].to_numpy()
    cuts = np.flatnonzero(u[1:] != u[:-1]) + 1
    return {grp_u[0]: grp_k.tolist() for grp_u, grp_k in zip(np.split(u, cuts), np.split(k, cuts))}


def price_tertiles(item_prices: Any) -> tuple[float, float]:
    """The catalog's 1/3 and 2/3 item-price quantiles (items, not events, so popular items don't skew it)."""
    prices = pd.to_numeric(pd.Series(item_prices), errors="coerce")
    prices = prices[prices > 0].dropna()
    if prices.empty:
        return (np.nan, np.nan)
    q1, q2 = prices.quantile([1 / 3, 2 / 3]).to_numpy()
    return float(q1), float(q2)


def price_band(avg_price: Any, tertiles: tuple[float, float]) -> np.ndarray | str | None:
    """'budget' below the catalog's lower tertile, 'premium' above the upper one, else 'mid'.

    A user's average price is the mean catalog price of the distinct items they interacted with.
    Unknown average price (no priced item) gives None rather than a guess. Works on scalars or arrays.
    """
    q1, q2 = tertiles
    arr = pd.to_numeric(pd.Series(np.atleast_1d(avg_price)), errors="coerce").to_numpy(dtype=float)
    out = np.where(arr < q1, "budget", np.where(arr > q2, "premium", "mid")).astype(object)
    out[np.isnan(arr) | np.isnan(q1) | np.isnan(q2)] = None
    return out[0] if np.ndim(avg_price) == 0 else out


def activity_level(recent_events: Any) -> np.ndarray:
    """'low' / 'medium' / 'high' from each user's event count in the last 30 days before as_of.

    Users with no recent event are 'low'. Among users with at least one, counts at or below the
    1/3 quantile are 'low', above the 2/3 quantile 'high', the rest 'medium'. Quantiles exclude the
    inactive users because they are usually the majority and would collapse the tertiles to 0.
    """
    counts = np.asarray(recent_events, dtype=float)
    out = np.full(counts.shape, "low", dtype=object)
    active = counts > 0
    if not active.any():
        return out
    q1, q2 = np.quantile(counts[active], [1 / 3, 2 / 3])
    out[active & (counts > q1)] = "medium"
    out[active & (counts > q2)] = "high"
    return out


def lifecycle_stage(first_ts: Any, last_ts: Any, as_of: Any, lifecycle_days: dict) -> np.ndarray | str:
    """'new' / 'active' / 'at_risk' / 'lapsed' from a user's first and last event before as_of.

    new: the first event is within `new` days of as_of (a recent arrival, whatever else they did);
    active: otherwise, the last event is within `active` days; at_risk: the last event is within
    `at_risk` days; lapsed: older than that. Checked in that order. Works on scalars or arrays.
    """
    as_of = pd.Timestamp(as_of)
    first = pd.to_datetime(pd.Series(np.atleast_1d(first_ts)))
    last = pd.to_datetime(pd.Series(np.atleast_1d(last_ts)))
    day = pd.Timedelta(days=1)
    since_first = ((as_of - first) / day).to_numpy(dtype=float)
    since_last = ((as_of - last) / day).to_numpy(dtype=float)
    out = np.select(
        [since_first <= lifecycle_days["new"], since_last <= lifecycle_days["active"],
         since_last <= lifecycle_days["at_risk"]],
        ["new", "active", "at_risk"], default="lapsed",
    ).astype(object)
    return out[0] if np.ndim(first_ts) == 0 and not isinstance(first_ts, (pd.Series, pd.Index)) else out


def make_tags(categories: list[str], brands: list[str], price: str | None, activity: str | None,
              lifecycle: str | None, purchase_intent: bool = False) -> list[str]:
    """Assemble one user's tags as 'kind:value' strings, most specific interests first."""
    tags = [f"category:{c}" for c in categories] + [f"brand:{b}" for b in brands]
    if price:
        tags.append(f"price:{price}")
    if activity:
        tags.append(f"activity:{activity}")
    if lifecycle:
        tags.append(f"lifecycle:{lifecycle}")
    if purchase_intent:
        tags.append(INTENT_TAG)
    return tags
