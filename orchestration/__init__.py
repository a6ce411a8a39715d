"""Dagster layer: thin assets around `ml/` and `data_contracts/`; `definitions.py` assembles them."""
