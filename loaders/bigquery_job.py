"""The ``bigquery`` load job: each configured table of any project -> the warehouse, staged and
merged on its keys, incremental by a cursor, the watermark committed with the rows
(``loaders.jobs``' database-table job); the row count estimated and announced first."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from loaders import state
from loaders.config import BigQuerySourceConfig
from loaders.jobs import TableReport, _load_table
from loaders.sources import bigquery as bq_source
from loaders.warehouse.base import Warehouse
from roundtrip.core.bigquery import BigQueryConnection

log = logging.getLogger(__name__)

# told (table, rows read, estimated total) as a load goes; the first call (0 rows) carries the estimate
Progress = Callable[[str, int, "int | None"], None]


@dataclass
class BigQueryReport(TableReport):
    estimated: int = 0
    estimated_by: str = ""

    def as_dict(self) -> dict[str, object]:
        row = super().as_dict()
        return {"source": row.pop("source"), "table": row.pop("table"), "estimated": self.estimated, **row}


@dataclass(frozen=True)
class Estimate:
    source: str
    bigquery_table: str
    table: str
    rows: int
    counted_by: str

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "bigquery_table": self.bigquery_table,
            "table": self.table,
            "estimated_rows": self.rows,
            "counted_by": self.counted_by,
        }


def _watermark_key(name: str, plan: bq_source.TablePlan) -> str:
    return f"bigquery:{name}:{plan.target_table}"  # what loaders.jobs stores for this table


def _plans(
    name: str, source: BigQuerySourceConfig, warehouse: Warehouse, full_refresh: bool, rest: Any, billing: str
) -> list[tuple[bq_source.TablePlan, str | None, int, str]]:
    """Every table checked against its metadata (nothing is read before all of them pass),
    with its read restriction and estimate."""
    plans = [bq_source.describe(rest, name, table, billing) for table in source.tables]
    found = []
    for plan in plans:
        since = (
            None if full_refresh or plan.cursor is None else state.get_watermark(warehouse, _watermark_key(name, plan))
        )
        where_sql = bq_source.restriction(plan, since)
        rows, how = bq_source.estimate(rest, plan, where_sql, billing)
        found.append((plan, where_sql, rows, how))
    return found


def estimate_bigquery(
    name: str,
    source: BigQuerySourceConfig,
    warehouse: Warehouse,
    full_refresh: bool = False,
    connection: BigQueryConnection | None = None,
) -> list[Estimate]:
    """What ``load_bigquery`` would read, without reading it (``--estimate``, medallion-auto)."""
    connection = connection or _connection()
    rest = connection.rest_client()
    try:
        return [
            Estimate(f"bigquery:{name}", str(plan.table), f"{source.target_schema}.{plan.target_table}", rows, how)
            for plan, _, rows, how in _plans(name, source, warehouse, full_refresh, rest, connection.project)
        ]
    finally:
        rest.close()


def load_bigquery(
    name: str,
    source: BigQuerySourceConfig,
    warehouse: Warehouse,
    full_refresh: bool = False,
    progress: Progress | None = None,
    connection: BigQueryConnection | None = None,
) -> list[BigQueryReport]:
    """Every configured table: Storage Read (a query job for views) -> staging + one MERGE on the
    keys, incremental by cursor with a lookback; the watermark commits with the rows."""
    connection = connection or _connection()
    rest = connection.rest_client()
    reports: list[BigQueryReport] = []
    try:
        for plan, _, rows, how in _plans(name, source, warehouse, full_refresh, rest, connection.project):
            label = f"{plan.table} -> {source.target_schema}.{plan.target_table}"
            log.info("%s: ~%s rows to read (%s)", plan.table, f"{rows:,}", how)
            if progress is not None:
                progress(label, 0, rows)
            report = BigQueryReport(
                f"bigquery:{name}",
                f"{source.target_schema}.{plan.target_table}",
                progress=None if progress is None else functools.partial(_tell, progress, label),
                estimated=rows,
                estimated_by=how,
            )
            read = functools.partial(_read, connection, rest, plan, warehouse.name, source.query_dataset)
            cursor = plan.cursor.target if plan.cursor else None
            _load_table(
                report, warehouse, source.target_schema, plan.target_table, plan.keys, cursor, read, full_refresh
            )
            reports.append(report)  # _load_table fills the report it is given
    finally:
        rest.close()
    return reports


def _read(
    connection: BigQueryConnection,
    rest: Any,
    plan: bq_source.TablePlan,
    target: str,
    query_dataset: str | None,
    since: object | None,
) -> Iterator[bq_source.Batch]:
    return bq_source.read_batches(connection, rest, plan, bq_source.restriction(plan, since), target, query_dataset)


def _tell(progress: Progress, label: str, _source: str, rows: int) -> None:
    progress(label, rows, None)


def _connection() -> BigQueryConnection:
    from roundtrip.core.settings import load_settings

    return BigQueryConnection.from_settings(load_settings())


__all__ = ["BigQueryReport", "Estimate", "estimate_bigquery", "load_bigquery"]
