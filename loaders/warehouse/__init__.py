"""Warehouse targets of the loaders: duckdb (default, embedded), postgres, bigquery."""

from __future__ import annotations

from loaders.errors import LoaderError
from loaders.warehouse.base import Warehouse, WriteResult
from roundtrip.core.settings import TARGETS, Settings, load_settings


def postgres_conninfo(settings: Settings) -> str:
    """The Postgres warehouse (``ROUNDTRIP_WAREHOUSE_URL``, by default ``ROUNDTRIP_POSTGRES_URL``):
    the database dbt's ``postgres`` target builds in, so loaders write where dbt reads."""
    url = settings.secret("warehouse_url")
    if not url:
        raise LoaderError(
            "no Postgres warehouse configured", hint="set ROUNDTRIP_WAREHOUSE_URL (or ROUNDTRIP_POSTGRES_URL)"
        )
    return url


def open_warehouse(target: str | None = None, wait: float = 0, settings: Settings | None = None) -> Warehouse:
    """The warehouse named by ``target`` (default ``ROUNDTRIP_TARGET`` or duckdb). ``wait``:
    seconds to wait for a DuckDB file another process holds."""
    settings = settings or load_settings()
    target = target or settings.target
    if target == "duckdb":
        from loaders.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(settings.duckdb_path, wait=wait)
    if target == "postgres":
        from loaders.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse(postgres_conninfo(settings))
    if target == "bigquery":
        from loaders.warehouse.bigquery import BigQuerySettings, BigQueryWarehouse

        return BigQueryWarehouse(BigQuerySettings.from_settings(settings))
    raise LoaderError(f"unknown warehouse target {target!r} (ROUNDTRIP_TARGET): use one of {', '.join(TARGETS)}")


__all__ = ["TARGETS", "Warehouse", "WriteResult", "open_warehouse"]
