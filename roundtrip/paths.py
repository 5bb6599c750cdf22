"""Where things live. Everything generated goes under ``data/`` (git-ignored)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """``ROUNDTRIP_DATA_DIR`` or ``<project>/data``."""
    return Path(os.environ.get("ROUNDTRIP_DATA_DIR", PROJECT_ROOT / "data")).resolve()


def duckdb_path() -> Path:
    """The embedded warehouse file (same default as ``profiles/profiles.yml``)."""
    return Path(os.environ.get("ROUNDTRIP_DUCKDB_PATH", data_dir() / "warehouse.duckdb")).resolve()


def duckdb_extension_dir() -> Path:
    """Project-local DuckDB extension folder filled by ``make setup`` from PyPI packages."""
    return Path(os.environ.get("ROUNDTRIP_DUCKDB_EXTENSION_DIR", PROJECT_ROOT / ".duckdb_extensions")).resolve()


def landing_dir() -> Path:
    return Path(os.environ.get("ROUNDTRIP_LANDING_PATH", data_dir() / "landing")).resolve()


def app_sqlite_path() -> Path:
    return Path(os.environ.get("ROUNDTRIP_APP_DB", data_dir() / "app.db")).resolve()


def services_dir() -> Path:
    return data_dir() / "services"


def dbt_target_dir() -> Path:
    """dbt's output folder; ``DBT_TARGET_PATH`` is dbt's own setting, honoured by dbt too."""
    return Path(os.environ.get("DBT_TARGET_PATH", PROJECT_ROOT / "target")).resolve()
