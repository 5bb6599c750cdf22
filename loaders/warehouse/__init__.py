"""Warehouse targets of the loaders: duckdb (default, embedded), postgres, bigquery."""

from __future__ import annotations

import os

from loaders.errors import LoaderError
from loaders.warehouse.base import Warehouse, WriteResult

TARGETS = ("duckdb", "postgres", "bigquery")


def postgres_conninfo() -> str:
    """The dbt ``postgres`` target's database (``ROUNDTRIP_PG_*``), so loaders write where dbt reads."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(
        host=os.environ.get("ROUNDTRIP_PG_HOST", "127.0.0.1"),
        port=os.environ.get("ROUNDTRIP_PG_PORT", "5432"),
        user=os.environ.get("ROUNDTRIP_PG_USER", "postgres"),
        password=os.environ.get("ROUNDTRIP_PG_PASSWORD", ""),
        dbname=os.environ.get("ROUNDTRIP_PG_DATABASE", "roundtrip"),
    )


def open_warehouse(target: str | None = None) -> Warehouse:
    """The warehouse named by ``target`` (default ``ROUNDTRIP_TARGET`` or duckdb)."""
    target = target or os.environ.get("ROUNDTRIP_TARGET", "duckdb")
    if target == "duckdb":
        from loaders.warehouse.duckdb import DuckDBWarehouse
        from roundtrip.paths import duckdb_path

        return DuckDBWarehouse(duckdb_path())
    if target == "postgres":
        from loaders.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse(postgres_conninfo())
    if target == "bigquery":
        from loaders.warehouse.bigquery import BigQuerySettings, BigQueryWarehouse

        return BigQueryWarehouse(BigQuerySettings.from_env())
    raise LoaderError(f"unknown warehouse target {target!r} (ROUNDTRIP_TARGET): use one of {', '.join(TARGETS)}")


__all__ = ["TARGETS", "Warehouse", "WriteResult", "open_warehouse"]
