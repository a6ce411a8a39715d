"""The dbt project object, alone in its module: dagster-dbt needs `target/manifest.json` at import time.

`make install` / `make test` run `dbt parse` to create it (see the Makefile).
"""

from pathlib import Path

from dagster_dbt import DbtProject

DBT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"

dbt_project = DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR)
