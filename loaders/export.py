"""Warehouse tables -> Snappy Parquet files under ``{destination}/{YYYYMMDD}/{table}/``.

After pass Culture's recommendation export job: selected columns of configured tables, one
folder per day and table, for another system to import (``import-table``).

- BigQuery: the selected columns go into a temporary table in ``_roundtrip`` (a CTAS that
  expires after a day), an extract job writes it as Parquet/SNAPPY to ``gs://``, and the
  temporary table is deleted in a ``finally`` (its expiry covers a crash).
- DuckDB: ``COPY (select ...) TO ... (format parquet, compression snappy)``, through fsspec for
  ``gs://`` and ``s3://``. PostgreSQL tables go the same way through DuckDB's postgres extension.

A re-export of the same day writes the same file names again (replacing them).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from loaders.config import ExportConfig, ExportTableConfig
from loaders.errors import LoaderError
from loaders.warehouse import Warehouse
from loaders.warehouse.base import STATE_SCHEMA

log = logging.getLogger(__name__)


@dataclass
class ExportReport:
    table: str
    destination: str
    rows: int
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return {
            "table": self.table,
            "destination": self.destination,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
        }


def table_folder(export: ExportConfig, day: date, table: str) -> str:
    return f"{export.destination.rstrip('/')}/{day:%Y%m%d}/{table}"


def export_tables(warehouse: Warehouse, export: ExportConfig, day: date) -> list[ExportReport]:
    reports = []
    for table in export.tables:
        started = time.perf_counter()
        folder = table_folder(export, day, table.name)
        if warehouse.name == "bigquery":
            destination, rows = _export_bigquery(warehouse, export, table, folder)
        else:
            destination, rows = _export_with_duckdb(warehouse, export, table, folder)
        report = ExportReport(f"{export.dataset}.{table.name}", destination, rows, time.perf_counter() - started)
        log.info("exported %s", report.as_dict())
        reports.append(report)
    return reports


# ------------------------------------------------------------------ BigQuery


def _export_bigquery(warehouse: Any, export: ExportConfig, table: ExportTableConfig, folder: str) -> tuple[str, int]:
    from google.cloud import bigquery

    from loaders.warehouse.bigquery import q

    if not folder.startswith("gs://"):
        raise LoaderError(f"export from BigQuery writes to gs:// only, not {export.destination!r}")
    client = warehouse.client
    source = warehouse.relation(export.dataset, table.name)
    columns = ", ".join(q(c) for c in table.columns) if table.columns else "*"
    temporary = f"_export_{table.name}_{uuid.uuid4().hex[:8]}"
    temporary_id = f"{warehouse.project}.{STATE_SCHEMA}.{temporary}"
    uri = f"{folder}/{table.name}.parquet" if export.single_file else f"{folder}/part-*.parquet"
    warehouse.ensure_dataset(STATE_SCHEMA)
    try:
        warehouse.query(
            f"create table {warehouse.relation(STATE_SCHEMA, temporary)} "
            "options (expiration_timestamp = timestamp_add(current_timestamp(), interval 1 day)) "
            f"as select {columns} from {source}"
        )
        rows = int(client.get_table(temporary_id).num_rows or 0)
        config = bigquery.ExtractJobConfig(destination_format="PARQUET", compression="SNAPPY")
        try:
            client.extract_table(temporary_id, uri, job_config=config).result()
        except Exception as exc:
            raise LoaderError(f"extract of {export.dataset}.{table.name} to {uri} failed: {exc}") from exc
    finally:
        client.delete_table(temporary_id, not_found_ok=True)
    return uri, rows


# ------------------------------------------------------------------ DuckDB (and Postgres through it)


def _export_with_duckdb(warehouse: Any, export: ExportConfig, table: ExportTableConfig, folder: str) -> tuple[str, int]:
    from loaders.sources.files import filesystem
    from roundtrip.core.sql import quote as q

    fs, path = filesystem(folder, export.storage_options)
    if "://" in folder:
        con, close = _duckdb_connection(warehouse)
        names = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        if not set(names) & set(con.list_filesystems()):
            con.register_filesystem(fs)
    else:
        fs.makedirs(path, exist_ok=True)
        con, close = _duckdb_connection(warehouse)
    try:
        prefix = "pg." if warehouse.name == "postgres" else ""
        columns = ", ".join(q(c) for c in table.columns) if table.columns else "*"
        target = f"{folder}/{table.name}.parquet"
        literal = target.replace("'", "''")
        try:
            row = con.execute(
                f"copy (select {columns} from {prefix}{q(export.dataset)}.{q(table.name)}) "
                f"to '{literal}' (format parquet, compression snappy)"
            ).fetchone()
        except Exception as exc:  # duckdb's own exception types
            raise LoaderError(f"export of {export.dataset}.{table.name} to {target} failed: {exc}") from exc
    finally:
        close()
    return target, int(row[0]) if row else 0


def _duckdb_connection(warehouse: Any) -> tuple[Any, Any]:
    """(connection, close): the warehouse's own DuckDB connection, or one attached to Postgres."""
    if warehouse.name == "duckdb":
        return warehouse.con, lambda: None
    if warehouse.name == "postgres":
        from roundtrip.core.duckdb_extensions import connect

        con = connect(extensions=("postgres",))
        literal = warehouse.conninfo.replace("'", "''")
        con.execute(f"attach '{literal}' as pg (type postgres, read_only)")
        return con, con.close
    raise LoaderError(f"export from {warehouse.name} is not supported")
