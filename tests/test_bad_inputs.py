"""The bad-input catalogue: each kind of broken log gives either a clear file-level error naming the file
(and column / row), or quarantined / repaired rows with the right reason - never a traceback, never a lost
row. Files are small variants of `fixtures/shop_events.csv` (real Merchandise Store products and visitor
ids) read through the generic mapping adapter, plus a few through the dedicated adapters.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from data_contracts.adapters import SourceError, amazon_reviews, load_source, uci_retail
from data_contracts.adapters.base import Limits
from data_contracts.adapters.generic import MappingError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MAPPING = FIXTURES / "shop_mapping.yaml"
LINES = (FIXTURES / "shop_events.csv").read_text().splitlines()
HEADER, ROWS = LINES[0], LINES[1:]


def write(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "export.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def load(path: Path, mapping=MAPPING, **limits):
    result = load_source(path, mapping=mapping, limits=Limits(**limits) if limits else None)
    assert result.accepted + result.quarantined == result.rows_in       # never a lost row
    return result


def quarantined(result) -> pd.DataFrame:
    return result.quarantine.to_pandas()


def replace_field(row: str, col: str, value: str) -> str:
    cells = row.split(",")
    cells[HEADER.split(",").index(col)] = value
    return ",".join(cells)


# 1. missing column -------------------------------------------------------------------------------------
def test_missing_column_names_file_and_column(tmp_path):
    cols = HEADER.split(",")
    i = cols.index("sku")
    rows = [",".join(c for j, c in enumerate(r.split(",")) if j != i) for r in ROWS]
    path = write(tmp_path, rows, header=",".join(c for j, c in enumerate(cols) if j != i))
    with pytest.raises(SourceError, match=r"export\.csv: missing required column\(s\) \['sku'\]"):
        load(path)


# 2. renamed column -------------------------------------------------------------------------------------
def test_renamed_column_is_named_with_a_hint(tmp_path):
    path = write(tmp_path, ROWS, header=HEADER.replace("event_time", "event_timestamp"))
    with pytest.raises(SourceError, match=r"export\.csv.*'event_time'.*renamed to 'event_timestamp'"):
        load(path)


# 3. wrong type -----------------------------------------------------------------------------------------
def test_wrong_type_is_quarantined_with_the_field(tmp_path):
    rows = list(ROWS)
    rows[2] = replace_field(rows[2], "qty", "two")
    rows[5] = replace_field(rows[5], "unit_price", "2,99 EUR".replace(",", "."))
    r = load(write(tmp_path, rows))
    q = quarantined(r)
    assert q[["source_row", "reason", "field"]].values.tolist() == [[2, "invalid_value", "qty"],
                                                                    [5, "invalid_value", "unit_price"]]
    assert json.loads(q["raw"].iloc[0])["qty"] == "two"


# 4. null user id: anonymous, accepted ------------------------------------------------------------------
def test_null_user_is_an_anonymous_event_not_a_rejection(tmp_path):
    rows = [replace_field(r, "customer", "") for r in ROWS[:4]]
    r = load(write(tmp_path, rows))
    assert r.quarantined == 0 and r.events.to_pandas()["user_id"].isna().all()


# 5. null item id ---------------------------------------------------------------------------------------
def test_null_item_id_is_quarantined_except_on_search(tmp_path):
    rows = list(ROWS)
    rows[1] = replace_field(rows[1], "sku", "")          # a view without an item
    r = load(write(tmp_path, rows))
    assert quarantined(r)[["source_row", "reason", "field"]].values.tolist() == [[1, "missing_item_id", "sku"]]
    assert "search" in set(r.events.to_pandas()["event_type"])   # row 4 is a search without an item: kept


# 6. unknown event type ---------------------------------------------------------------------------------
def test_unknown_event_type(tmp_path):
    rows = list(ROWS)
    rows[0] = replace_field(rows[0], "action", "add_to_wishlist")
    r = load(write(tmp_path, rows))
    assert quarantined(r)[["source_row", "reason", "field"]].values.tolist() == [[0, "unknown_event_type", "action"]]


# 7. negative or zero price -----------------------------------------------------------------------------
def test_negative_price_is_quarantined_zero_price_is_repaired(tmp_path):
    rows = list(ROWS)
    rows[0] = replace_field(rows[0], "unit_price", "-16.99")
    rows[1] = replace_field(rows[1], "unit_price", "0")
    r = load(write(tmp_path, rows))
    assert quarantined(r)[["source_row", "reason", "field"]].values.tolist() == [[0, "negative_price", "unit_price"]]
    assert r.repairs == {"zero_price_to_null": 1}
    ev = r.events.to_pandas().set_index("source_row")
    assert pd.isna(ev.loc[1, "price"])


def test_zero_quantity_on_a_cart_event(tmp_path):
    rows = list(ROWS)
    rows[2] = replace_field(rows[2], "qty", "0")
    r = load(write(tmp_path, rows))
    assert quarantined(r)[["source_row", "reason", "field"]].values.tolist() == [[2, "nonpositive_quantity", "qty"]]


# 8. timestamps in the future / before the earliest date / unparsable -----------------------------------
def test_timestamps_outside_the_window_and_unparsable(tmp_path):
    rows = list(ROWS)
    rows[0] = replace_field(rows[0], "event_time", "2099-01-01 00:00:00")
    rows[1] = replace_field(rows[1], "event_time", "1999-12-31 23:59:59")
    rows[2] = replace_field(rows[2], "event_time", "yesterday-ish")
    r = load(write(tmp_path, rows), earliest_ts=pd.Timestamp("2016-01-01"), max_future_skew_hours=24)
    assert quarantined(r)[["source_row", "reason", "field"]].values.tolist() == [
        [0, "ts_out_of_range", "event_time"], [1, "ts_out_of_range", "event_time"],
        [2, "missing_timestamp", "event_time"]]


def test_clock_skew_within_the_allowed_hours_is_accepted(tmp_path):
    now = pd.Timestamp("2016-10-04 08:00:00")
    rows = [replace_field(ROWS[0], "event_time", "2016-10-04 20:00:00"),     # 12 h ahead: ok with 24 h skew
            replace_field(ROWS[1], "event_time", "2016-10-06 08:00:01")]     # 48 h ahead: out of range
    r = load(write(tmp_path, rows), now=now, max_future_skew_hours=24)
    assert (r.accepted, quarantined(r)["reason"].tolist()) == (1, ["ts_out_of_range"])


# 9. duplicate events -----------------------------------------------------------------------------------
def test_duplicate_rows_keep_the_first_copy(tmp_path):
    rows = [*ROWS, ROWS[3], ROWS[3]]
    r = load(write(tmp_path, rows))
    assert quarantined(r)[["source_row", "reason"]].values.tolist() == [[12, "duplicate_row"], [13, "duplicate_row"]]
    assert 3 in set(r.events.to_pandas()["source_row"])


# 10. malformed CSV line --------------------------------------------------------------------------------
def test_malformed_csv_line_is_quarantined_with_its_line_number(tmp_path):
    rows = list(ROWS)
    rows[6] = rows[6] + ",EXTRA,FIELDS"
    rows[7] = rows[7].rsplit(",", 3)[0]                    # truncated line
    r = load(write(tmp_path, rows))
    q = quarantined(r)
    assert q[["source_row", "reason"]].values.tolist() == [[6, "malformed_line"], [7, "malformed_line"]]
    assert json.loads(q["raw"].iloc[0])["_line"] == 8      # 1-based line in the file (header = line 1)
    assert r.accepted == 10


def test_a_stray_quote_rejects_its_own_line_only_and_the_lines_after_it_are_parsed(tmp_path):
    """An unclosed quote would make the csv module read the rest of the file as one field: only its line goes."""
    rows = list(ROWS)
    rows[3] = replace_field(rows[3], "product_name", '"Google Mug')   # the quote never closes
    r = load(write(tmp_path, rows))
    q = quarantined(r)
    assert q[["source_row", "reason"]].values.tolist() == [[3, "malformed_line"]]
    assert json.loads(q["raw"].iloc[0])["_text"].startswith(rows[3][:20])
    assert r.rows_in == len(ROWS) and r.accepted == len(ROWS) - 1  # every later line is a record of its own
    # two stray quotes in one column: the csv module would read lines 3..8 as one record with the right number of
    # fields (the second quote closes the first); the swallowed lines are whole rows, so both lines are rejected
    twice = list(ROWS)
    for n in (3, 8):
        twice[n] = replace_field(twice[n], "product_name", '"Google Mug')
    t = load(write(tmp_path, twice, name="twice.csv"))
    assert quarantined(t)[["source_row", "reason"]].values.tolist() == [[3, "malformed_line"], [8, "malformed_line"]]
    assert t.rows_in == len(ROWS)
    # a legitimately quoted field over two lines (same number of fields) is one record, accepted
    multi = list(ROWS)
    multi[3] = replace_field(multi[3], "product_name", '"Google Mug\nwith lid"')
    m = load(write(tmp_path, multi, name="multi.csv"))
    assert m.quarantined == 0 and m.rows_in == len(ROWS)


# 11. invalid UTF-8 -------------------------------------------------------------------------------------
def test_invalid_utf8_line_is_quarantined_naming_the_field(tmp_path):
    path = tmp_path / "latin1.csv"
    rows = list(ROWS)
    rows[9] = rows[9].replace("Nest Cam Outdoor Security Camera - USA", "Caméra Nest extérieure")
    body = "\n".join([HEADER, *rows]) + "\n"
    data = body.encode("utf-8").replace("Caméra".encode("utf-8"), "Caméra".encode("latin-1"))
    path.write_bytes(data)
    r = load(path)
    q = quarantined(r)
    assert q[["source_row", "reason", "field"]].values.tolist() == [[9, "invalid_encoding", "product_name"]]
    assert "\\xe9" in json.loads(q["raw"].iloc[0])["_text"]    # the bad byte is shown, not lost


# 12. overlong strings ----------------------------------------------------------------------------------
def test_overlong_strings_are_cut_and_counted_not_dropped(tmp_path):
    rows = list(ROWS)
    long_title = "Google Men's 100% Cotton Short Sleeve Hero Tee White " * 40     # ~2,100 characters
    rows = [replace_field(r, "product_name", long_title.strip()) if "GGOEGAAX0104" in r else r for r in rows]
    rows[4] = replace_field(rows[4], "search_terms", "water bottle " * 100)
    r = load(write(tmp_path, rows), max_text_lengths={"title": 200, "query": 120, "description": 5000,
                                                      "review_text": 10000})
    assert r.quarantined == 0
    assert r.repairs == {"truncated_query": 1, "truncated_title": 1}
    items = r.items.to_pandas().set_index("item_id")
    assert len(items.loc["GGOEGAAX0104", "title"]) == 200
    assert len(r.events.to_pandas().set_index("source_row").loc[4, "query"]) == 120


# 13. empty file, 14. header-only file ------------------------------------------------------------------
def test_empty_file_is_a_file_level_error(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(SourceError, match=r"empty\.csv: empty file"):
        load(path)


def test_header_only_file_is_a_file_level_error(tmp_path):
    with pytest.raises(SourceError, match=r"export\.csv: header only, no data rows"):
        load(write(tmp_path, []))


# 15. mixed time zones ----------------------------------------------------------------------------------
def test_mixed_time_zones_are_normalised_to_utc(tmp_path):
    rows = [replace_field(ROWS[0], "event_time", "2016-10-03T11:14:02+02:00"),
            replace_field(ROWS[1], "event_time", "2016-10-03T09:15:40Z"),
            replace_field(ROWS[2], "event_time", "2016-10-03 11:16:11"),             # naive = mapping timezone
            replace_field(ROWS[3], "event_time", "2016-10-03 05:18:53-04:00")]
    mapping = {**yaml.safe_load(MAPPING.read_text()), "timezone": "Europe/Berlin"}
    r = load(write(tmp_path, rows), mapping=mapping)
    ts = r.events.to_pandas().sort_values("source_row")["ts"].dt.strftime("%H:%M:%S").tolist()
    assert ts == ["09:14:02", "09:15:40", "09:16:11", "09:18:53"]


# 16. PII in free text ----------------------------------------------------------------------------------
def test_pii_in_free_text_is_masked_and_counted(tmp_path):
    rows = list(ROWS)
    rows[4] = replace_field(rows[4], "search_terms", "bottle for jane.doe@example.com call +44 20 7946 0958")
    r = load(write(tmp_path, rows))
    q = r.events.to_pandas().set_index("source_row").loc[4, "query"]
    assert q == "bottle for [email] call [phone]"
    assert r.repairs == {"pii_email_masked": 1, "pii_phone_masked": 1}


def test_pii_in_a_quarantined_rows_raw_record_is_masked_too(tmp_path):
    rows = list(ROWS)
    rows[4] = replace_field(rows[4], "search_terms", "mail jane.doe@example.com or (555) 123-4567")
    rows.append(rows[4])  # an exact duplicate: quarantined, its raw record kept
    r = load(write(tmp_path, rows))
    q = quarantined(r)
    assert q["reason"].tolist() == ["duplicate_row"]
    raw = json.loads(q["raw"].iloc[0])  # still valid JSON
    assert "jane.doe@example.com" not in q["raw"].iloc[0] and "123-4567" not in q["raw"].iloc[0]
    assert raw["search_terms"] == "mail [email] or [phone]"
    assert r.repairs == {"pii_email_masked": 1, "pii_phone_masked": 1, "pii_masked_in_quarantine": 1}


def test_pii_masking_leaves_skus_prices_and_dates_alone():
    from data_contracts.pii import mask_text

    text = "GGOEGAAX0104 costs 16.99 since 2016-10-03, EAN 0095205603217, ask (555) 123-4567"
    assert mask_text(text) == ("GGOEGAAX0104 costs 16.99 since 2016-10-03, EAN 0095205603217, ask [phone]", 0, 1)


# 17. out-of-range rating, 18. broken JSON line, 19. unreadable / corrupt files ----------------------------
def test_rating_outside_one_to_five(tmp_path):
    path = tmp_path / "reviews.jsonl"
    lines = [{"reviewerID": "A2Y5Z4PB5OMUG5", "asin": "B000K2PJ4K", "overall": 5.0, "unixReviewTime": 1441324800,
              "reviewText": "Great product and price!"},
             {"reviewerID": "A1KOJ2JNCDQ9G2", "asin": "B000KPIHQ4", "overall": 7.0, "unixReviewTime": 1408320000,
              "reviewText": "Runs small."}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    r = amazon_reviews.load(path)
    assert quarantined(r)[["source_row", "reason", "field"]].values.tolist() == [[1, "invalid_rating", "overall"]]


def test_broken_json_line_is_quarantined(tmp_path):
    path = tmp_path / "reviews.json.gz"
    good = json.dumps({"reviewerID": "A2Y5Z4PB5OMUG5", "asin": "B000K2PJ4K", "overall": 4.0,
                       "unixReviewTime": 1441324800, "reviewText": "Fits well, email me at tom@shop.co.uk"})
    path.write_bytes(gzip.compress(("\n".join([good, '{"reviewerID": "A1KOJ2JNCDQ9G2", "asin": "B0'])
                                    + "\n").encode()))
    r = amazon_reviews.load(path)
    assert (r.accepted, quarantined(r)["reason"].tolist()) == (1, ["malformed_line"])
    assert r.events.to_pandas()["review_text"].iloc[0] == "Fits well, email me at [email]"


def test_unreadable_and_corrupt_files_name_the_file(tmp_path):
    fake = tmp_path / "events.parquet"
    fake.write_bytes(b"PAR1 this is not parquet")
    mapping = {k: v for k, v in yaml.safe_load(MAPPING.read_text()).items() if k != "format"}
    with pytest.raises(SourceError, match=r"events\.parquet: not a readable Parquet file"):
        load(fake, mapping=mapping)     # format from the extension
    gz = tmp_path / "online_retail.csv.gz"
    gz.write_bytes(gzip.compress(b"InvoiceNo,StockCode\n")[:15])
    with pytest.raises(SourceError, match=r"online_retail\.csv\.gz: corrupt gzip"):
        uci_retail.load(gz)
    gz.write_bytes(bytes(range(256)))   # not gzip at all
    with pytest.raises(SourceError, match=r"online_retail\.csv\.gz: named like a gzip file but is not one"):
        uci_retail.load(gz)
    with pytest.raises(SourceError, match="file not found"):
        load(tmp_path / "nope.csv")


def test_bad_mapping_file_names_the_key(tmp_path):
    bad = tmp_path / "mapping.yaml"
    bad.write_text("columns:\n  ts: event_time\n  item: sku\n")
    with pytest.raises(MappingError, match=r"mapping\.yaml: columns: unknown canonical field\(s\) \['item'\]"):
        load(write(tmp_path, ROWS), mapping=bad)
    bad.write_text("columns:\n  ts: event_time\n  item_id: sku\n  event_type: action\nevent_types:\n  pageview: browse\n")
    with pytest.raises(MappingError, match=r"event_types"):
        load(write(tmp_path, ROWS), mapping=bad)


def test_uci_dirty_lines_all_accounted_for(tmp_path):
    """A UCI-format file with real rows and every kind of UCI dirt."""
    path = tmp_path / "online_retail_dirty.csv"
    path.write_text(
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
        "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
        "C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527.0,United Kingdom\n"
        "C536383,35004C,SET OF 3 COLOURED  FLYING DUCKS,-1,2010-12-01 09:49:00,4.65,15311.0,United Kingdom\n"
        "536414,22139,,56,2010-12-01 11:52:00,0,,United Kingdom\n"
        "536544,21773,DECORATIVE ROSE BATHROOM BOTTLE,1,2010-12-01 14:32:00,2.51,,United Kingdom\n"
        "536589,21777,,-10,2010-12-01 16:50:00,0,,United Kingdom\n"
        "A563186,B,Adjust bad debt,1,2011-08-12 14:51:00,-11062.06,,United Kingdom\n"
        "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00\n")
    r = uci_retail.load(path)
    q = quarantined(r)
    assert q[["source_row", "reason"]].values.tolist() == [
        [1, "duplicate_row"], [2, "non_product_line"], [6, "nonpositive_quantity"], [7, "non_product_line"],
        [8, "malformed_line"]]
    ev = r.events.to_pandas().set_index("source_row")
    assert ev.loc[3, "event_type"] == "return" and ev.loc[3, "quantity"] == 1
    assert ev.loc[[4, 5], "user_id"].isna().all()            # no customer: anonymous, accepted
    assert pd.isna(ev.loc[4, "price"]) and r.repairs["zero_price_to_null"] == 1
