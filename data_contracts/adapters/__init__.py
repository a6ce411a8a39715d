"""Source adapters: one module per log format, each mapping to the canonical tables.

`ADAPTERS` maps the name used in `persona.yaml` (`source.adapter`) to the loader.
"""

from data_contracts.adapters import ga_merch
from data_contracts.adapters.base import AdapterResult, SourceError

ADAPTERS = {ga_merch.NAME: ga_merch.load}


def get_adapter(name: str):
    try:
        return ADAPTERS[name]
    except KeyError:
        raise SourceError(f"unknown adapter {name!r}; available: {sorted(ADAPTERS)}") from None


__all__ = ["ADAPTERS", "AdapterResult", "SourceError", "get_adapter"]
