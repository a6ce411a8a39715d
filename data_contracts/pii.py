"""PII in free text: e-mail addresses and phone numbers are masked at ingestion, and counted.

Only user-written free text is scanned (`review_text`, `query`): product titles and descriptions are
shop content full of model numbers that look like phone numbers. A phone number needs separators
between its digit groups (`+44 20 7946 0958`, `(555) 123-4567`, `555.123.4567`) or a leading `+` with
at least 9 digits, so SKUs, EANs and prices are not touched.
"""

from __future__ import annotations

import re

import pandas as pd

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
PHONE = re.compile(
    r"(?<![\w.])(?:"
    r"\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){1,3}"   # +44 20 7946 0958, +15551234567
    r"|\(\d{2,4}\)[\s.-]?\d{3,4}[\s.-]\d{3,4}"                               # (555) 123-4567
    r"|\d{3}[\s.-]\d{3,4}[\s.-]\d{4}"                                        # 555-123-4567, 555 123 4567
    r")(?![\w])"
)
EMAIL_MASK = "[email]"
PHONE_MASK = "[phone]"
FREE_TEXT_FIELDS = ("review_text", "query")


def mask_text(text: str) -> tuple[str, int, int]:
    """(masked text, e-mails masked, phone numbers masked)."""
    text, n_email = EMAIL.subn(EMAIL_MASK, text)
    text, n_phone = PHONE.subn(PHONE_MASK, text)
    return text, n_email, n_phone


def mask_series(values: pd.Series) -> tuple[pd.Series, int, int]:
    """Mask every non-null string; returns (values, values with an e-mail, values with a phone number)."""
    s = values.astype(object)
    present = s.notna()
    if not present.any():
        return values, 0, 0
    text = s[present].astype(str)
    has_email = text.str.contains(EMAIL)
    has_phone = text.str.contains(PHONE)
    hit = has_email | has_phone
    if not hit.any():
        return values, 0, 0
    out = s.copy()
    out.loc[hit[hit].index] = [mask_text(t)[0] for t in text[hit]]
    return out, int(has_email.sum()), int(has_phone.sum())
