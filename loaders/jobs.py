"""Load jobs: wire a source reader to a warehouse, keep watermarks and the file manifest."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from loaders.config import FileStreamConfig, SqliteSourceConfig, SqlSourceConfig
from loaders.sources import files as file_source
from loaders.sources import sql as sql_source
from loaders.sources import sqlite as sqlite_source
from loaders.warehouse.base import STATE_SCHEMA, Warehouse, WriteResult

log = logging.getLogger(__name__)
LOADED_AT = "_loaded_at"
MANIFEST_TABLE = "file_manifest"


@dataclass
class TableReport:
    source: str
    table: str
    read: int = 0
    result: WriteResult = field(default_factory=WriteResult)
    files_loaded: int = 0
    files_skipped: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "table": self.table,
            "read": self.read,
            "inserted": self.result.inserted,
            "updated": self.result.updated,
            "unchanged": self.result.unchanged,
            "deleted": self.result.deleted,
            "files_loaded": self.files_loaded,
            "files_skipped": self.files_skipped,
            "seconds": round(self.seconds, 3),
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(data: pa.Table, loaded_at: datetime) -> pa.Table:
    return data.append_column(LOADED_AT, pa.array([loaded_at] * data.num_rows, pa.timestamp("us", tz="UTC")))


def load_sqlite(
    name: str, source: SqliteSourceConfig, warehouse: Warehouse, full_refresh: bool = False
) -> list[TableReport]:
    """Every configured table: staging + MERGE on the keys, incremental by cursor, watermark kept
    in the same transaction as the rows it covers."""
    reports = []
    path = Path(source.path)
    for table in source.tables:
        started = time.perf_counter()
        report = TableReport(f"sqlite:{name}", f"{source.target_schema}.{table.name}")
        state_key = f"sqlite:{name}:{table.name}:watermark"
        stored = None if full_refresh else warehouse.get_state(state_key)
        since = json.loads(stored) if stored is not None and table.cursor else None
        loaded_at = _now()
        watermark = since
        with warehouse.transaction():
            for batch, raw_max in sqlite_source.read_batches(path, table, since):
                report.read += batch.num_rows
                report.result += warehouse.merge(
                    source.target_schema, table.name, _stamp(batch, loaded_at), table.primary_key
                )
                if raw_max is not None and (watermark is None or raw_max > watermark):
                    watermark = raw_max
            if table.delete_propagation:
                keys = sqlite_source.read_keys(path, table)
                report.result.deleted += warehouse.delete_missing(
                    source.target_schema, table.name, table.primary_key, keys
                )
            if table.cursor and watermark is not None:
                warehouse.set_state(state_key, json.dumps(watermark))
        report.seconds = time.perf_counter() - started
        reports.append(report)
    return reports


def load_sql(name: str, source: SqlSourceConfig, warehouse: Warehouse, full_refresh: bool = False) -> list[TableReport]:
    reports = []
    for table in source.tables:
        started = time.perf_counter()
        report = TableReport(f"sql:{name}", f"{source.target_schema}.{table.name}")
        state_key = f"sql:{name}:{table.name}:watermark"
        stored = None if full_refresh else warehouse.get_state(state_key)
        since = stored if table.cursor else None
        loaded_at = _now()
        watermark: object | None = None
        with warehouse.transaction():
            for batch in sql_source.read_table(source, table, since):
                data = pa.Table.from_batches([batch])
                report.read += data.num_rows
                report.result += warehouse.merge(
                    source.target_schema, table.name, _stamp(data, loaded_at), table.primary_key
                )
                if table.cursor and data.num_rows:
                    top = pc.max(data.column(table.cursor)).as_py()
                    watermark = top if watermark is None or top > watermark else watermark
            if table.cursor and watermark is not None:
                warehouse.set_state(
                    state_key, watermark.isoformat() if hasattr(watermark, "isoformat") else str(watermark)
                )
        report.seconds = time.perf_counter() - started
        reports.append(report)
    return reports


def _manifest(warehouse: Warehouse, stream: str) -> dict[str, str]:
    """path -> fingerprint of files already loaded for ``stream``."""
    raw = warehouse.get_state(f"files:{stream}:manifest")
    return json.loads(raw) if raw else {}


def load_files(name: str, stream: FileStreamConfig, warehouse: Warehouse) -> TableReport:
    """Append new files; a changed file replaces exactly its own rows; a re-run loads nothing.

    Strategy ``catalog``: the current set of files is the whole truth, swapped in atomically
    (an empty source empties the table).
    """
    import duckdb

    started = time.perf_counter()
    report = TableReport(f"files:{name}", f"{stream.target_schema}.{stream.table}")
    files = file_source.list_files(stream)
    seen = _manifest(warehouse, name)
    con = duckdb.connect()
    loaded_at = _now()
    try:
        if stream.strategy == "catalog":
            tables = [file_source.read_file(con, f, stream) for f in files]
            data = pa.concat_tables(tables) if tables else _empty(stream)
            report.read = data.num_rows
            with warehouse.transaction():
                warehouse.replace(stream.target_schema, stream.table, _stamp(data, loaded_at))
                warehouse.set_state(f"files:{name}:manifest", json.dumps({f.path: f.fingerprint for f in files}))
            report.result.inserted = data.num_rows
            report.files_loaded = len(files)
        else:
            todo = [f for f in files if seen.get(f.path) != f.fingerprint]
            report.files_skipped = len(files) - len(todo)
            for source_file in todo:
                data = file_source.read_file(con, source_file, stream)
                with warehouse.transaction():
                    if source_file.path in seen:  # changed since last load: replace its rows
                        report.result.deleted += warehouse.delete_where(
                            stream.target_schema, stream.table, "_source_file", [source_file.path]
                        )
                    report.result.inserted += warehouse.append(
                        stream.target_schema, stream.table, _stamp(data, loaded_at)
                    )
                    seen[source_file.path] = source_file.fingerprint
                    warehouse.set_state(f"files:{name}:manifest", json.dumps(seen))
                report.read += data.num_rows
                report.files_loaded += 1
    finally:
        con.close()
    report.seconds = time.perf_counter() - started
    return report


def _empty(stream: FileStreamConfig) -> pa.Table:
    columns = [*(stream.columns or []), "_source_file"]
    table = pa.table({c: pa.array([], pa.string()) for c in columns})
    return table.append_column("_source_line", pa.array([], pa.int64()))


__all__ = ["STATE_SCHEMA", "TableReport", "load_files", "load_sql", "load_sqlite"]
