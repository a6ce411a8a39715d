"""docs/configuration.md documents every key of persona.config.DEFAULTS."""

import re
from pathlib import Path

from persona.config import DEFAULTS

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def _documented_rows(doc: str) -> set[str]:
    """The keys of the reference tables: the backticked first cell of each row, `| `dotted.key` | ...`."""
    return set(re.findall(r"^\|\s*`([^`]+)`\s*\|", doc, flags=re.MULTILINE))


def _dotted_keys(node: dict, rows: set[str], prefix: str = "") -> list[str]:
    """Leaf keys, dotted. A dict is a section to descend into unless it has a row of its own
    (dict-valued settings such as `profiles.event_weights` are documented as one row)."""
    keys = []
    for name, value in node.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and value and key not in rows:
            keys += _dotted_keys(value, rows, f"{key}.")
        else:
            keys.append(key)
    return keys


def test_every_config_key_is_documented_in_docs_configuration():
    doc = DOC.read_text()
    rows = _documented_rows(doc)
    missing = [k for k in _dotted_keys(DEFAULTS, rows) if k not in rows or f"`{k}`" not in doc]
    assert not missing, (f"docs/configuration.md has no table row `| `key` | default | meaning |` for "
                         f"{len(missing)} key(s) of persona.config.DEFAULTS: {', '.join(missing)}")
