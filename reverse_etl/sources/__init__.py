"""Where a sync reads its model: the warehouse dbt built it in, one module each.

Every source makes the model's rows readable in the run's own DuckDB (``reverse_etl.records``
classifies them there): DuckDB attaches the warehouse file read-only and reads it in place;
Postgres and BigQuery copy the selected columns into the run's scratch database, streaming
(DuckDB's postgres scanner over binary COPY; the Storage Read API as Arrow record batches), so
each model row leaves the warehouse once and memory stays bounded by a batch.
"""

from __future__ import annotations

from pathlib import Path

from reverse_etl.errors import SyncError
from reverse_etl.sources.base import WarehouseSource
from roundtrip.core.settings import Settings


def warehouse_file(settings: Settings) -> Path:
    """The DuckDB warehouse file (``ROUNDTRIP_DUCKDB_PATH``, resolved by the settings)."""
    return settings.duckdb_path or settings.data_dir / "warehouse.duckdb"


def open_source(target: str, settings: Settings, wait: float = 0) -> WarehouseSource:
    """The source for the dbt ``target`` the syncs read (``--target``, ``ROUNDTRIP_TARGET``)."""
    if target == "duckdb":
        from reverse_etl.sources.duckdb import DuckDBSource

        return DuckDBSource(warehouse_file(settings), wait=wait)
    if target == "postgres":
        from reverse_etl.sources.postgres import PostgresSource

        url = settings.secret("warehouse_url")
        if not url:
            raise SyncError(
                "no Postgres warehouse to read the models from",
                hint="set ROUNDTRIP_WAREHOUSE_URL (or ROUNDTRIP_POSTGRES_URL)",
            )
        return PostgresSource(url)
    if target == "bigquery":
        from reverse_etl.sources.bigquery import BigQuerySource
        from roundtrip.core.bigquery import BigQueryConnection

        return BigQuerySource(BigQueryConnection.from_settings(settings))
    raise SyncError(f"unknown warehouse target {target!r}: use duckdb, postgres or bigquery")


__all__ = ["WarehouseSource", "open_source"]
