"""Configuration and connections as Dagster resources."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from dagster import ConfigurableResource

from persona.config import Settings, load_settings
from persona import warehouse


class PersonaConfig(ConfigurableResource):
    """The resolved `persona.yaml` (+ environment overrides), read at run time.

    `config_file` empty = `$PERSONA_CONFIG` or the project's `persona.yaml`.
    """

    config_file: str = ""

    def settings(self) -> Settings:
        return load_settings(self.config_file or None)


class Warehouse(ConfigurableResource):
    """The DuckDB warehouse; the path comes from the config unless given here."""

    path: str = ""

    def resolve(self, settings: Settings) -> Path:
        return Path(self.path) if self.path else settings.warehouse_path

    def read(self, settings: Settings, sql: str, params: list | None = None) -> pd.DataFrame:
        return warehouse.read_df(self.resolve(settings), sql, params)

    def replace(self, settings: Settings, tables: dict) -> None:
        warehouse.replace_tables(self.resolve(settings), tables)
