"""Warehouse tables -> Snappy Parquet files under ``{destination}/{YYYYMMDD}/{table}/``.

After pass Culture's recommendation export job: selected columns of configured tables, one
folder per day and table, for another system to import (``import-table``). Each warehouse
writes its own way (``Warehouse.export_parquet``): BigQuery through a temporary table and an
extract job to ``gs://``, DuckDB with ``COPY ... TO``, PostgreSQL through DuckDB's postgres
extension. A re-export of the same day writes the same file names again (replacing them).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date

from loaders.config import ExportConfig
from loaders.warehouse import Warehouse
from loaders.warehouse.base import ParquetExport

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
        destination, rows = warehouse.export_parquet(
            ParquetExport(
                schema=export.dataset,
                table=table.name,
                columns=table.columns,
                folder=table_folder(export, day, table.name),
                storage_options=export.storage_options,
                single_file=export.single_file,
            )
        )
        report = ExportReport(f"{export.dataset}.{table.name}", destination, rows, time.perf_counter() - started)
        log.info("exported %s", report.as_dict())
        reports.append(report)
    return reports
