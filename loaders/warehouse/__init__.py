"""Warehouse targets of the loaders."""

from __future__ import annotations

import os

from loaders.errors import LoaderError
from loaders.warehouse.base import Warehouse, WriteResult


def open_warehouse(target: str | None = None) -> Warehouse:
    """The warehouse named by ``target`` (default ``ROUNDTRIP_TARGET`` or duckdb)."""
    target = target or os.environ.get("ROUNDTRIP_TARGET", "duckdb")
    if target == "duckdb":
        from loaders.warehouse.duckdb import DuckDBWarehouse
        from roundtrip.paths import duckdb_path

        return DuckDBWarehouse(duckdb_path())
    raise LoaderError(f"unknown or not yet supported warehouse target {target!r} (ROUNDTRIP_TARGET)")


__all__ = ["Warehouse", "WriteResult", "open_warehouse"]
