"""Load jobs: wire a source reader to a warehouse, keep watermarks and the file manifest.

Each job commits a table's rows together with the bookkeeping that describes them (watermark,
manifest rows, rejects) in one warehouse transaction, and returns counts that are true.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from loaders import state
from loaders.config import FileStreamConfig, LoadersConfig, SqliteSourceConfig, SqlSourceConfig
from loaders.sources import files as file_source
from loaders.sources import sql as sql_source
from loaders.sources import sqlite as sqlite_source
from loaders.warehouse.base import LOADED_AT, Warehouse, WriteResult

log = logging.getLogger(__name__)


@dataclass
class TableReport:
    source: str
    table: str
    read: int = 0
    result: WriteResult = field(default_factory=WriteResult)
    rejected: int = 0
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
            "rejected": self.rejected,
            "files_loaded": self.files_loaded,
            "files_skipped": self.files_skipped,
            "seconds": round(self.seconds, 3),
        }


def _stamp(data: pa.Table, loaded_at: datetime) -> pa.Table:
    return data.append_column(LOADED_AT, pa.array([loaded_at] * data.num_rows, pa.timestamp("us", tz="UTC")))


@dataclass
class _Highest:
    """The largest cursor value seen so far: the next run's watermark."""

    value: object | None = None

    def offer(self, candidate: object | None) -> None:
        if candidate is not None and (self.value is None or candidate > self.value):  # type: ignore[operator]
            self.value = candidate


def _tracked(
    batches: Iterator[tuple[pa.Table, object | None]], report: TableReport, highest: _Highest, loaded_at: datetime
) -> Iterator[pa.Table]:
    """Stamp each batch on its way to the warehouse, counting rows and keeping the highest cursor."""
    for batch, cursor_max in batches:
        report.read += batch.num_rows
        highest.offer(cursor_max)
        yield _stamp(batch, loaded_at)


def load_sqlite(
    name: str, source: SqliteSourceConfig, warehouse: Warehouse, full_refresh: bool = False
) -> list[TableReport]:
    """Every configured table: staging + one MERGE on the keys, incremental by cursor, optional
    delete propagation; the watermark commits in the same transaction as the rows it covers."""
    reports = []
    path = Path(source.path)
    for table in source.tables:
        started = time.perf_counter()
        report = TableReport(f"sqlite:{name}", f"{source.target_schema}.{table.name}")
        key = f"sqlite:{name}:{table.name}"
        since = None if full_refresh or not table.cursor else state.get_watermark(warehouse, key)
        loaded_at = state.now()
        highest = _Highest(since)

        batches = _tracked(sqlite_source.read_batches(path, table, since), report, highest, loaded_at)
        with warehouse.transaction():
            report.result += warehouse.merge(source.target_schema, table.name, batches, table.primary_key)
            if table.delete_propagation:
                keys = sqlite_source.read_keys(path, table)
                report.result.deleted += warehouse.delete_missing(
                    source.target_schema, table.name, table.primary_key, [keys]
                )
            if table.cursor and highest.value is not None:
                state.set_watermark(warehouse, key, highest.value)
        report.seconds = time.perf_counter() - started
        log.info("%s -> %s: %s", report.source, report.table, report.as_dict())
        reports.append(report)
    return reports


def load_sql(name: str, source: SqlSourceConfig, warehouse: Warehouse, full_refresh: bool = False) -> list[TableReport]:
    """Tables of a SQL database (Postgres, MySQL/MariaDB, SQLite): full, or incremental by cursor."""
    reports = []
    for table in source.tables:
        started = time.perf_counter()
        report = TableReport(f"sql:{name}", f"{source.target_schema}.{table.name}")
        key = f"sql:{name}:{table.name}"
        since = None if full_refresh or not table.cursor else state.get_watermark(warehouse, key)
        loaded_at = state.now()
        highest = _Highest(since)

        batches = _tracked(sql_source.read_table(source, table, since), report, highest, loaded_at)
        with warehouse.transaction():
            report.result += warehouse.merge(source.target_schema, table.name, batches, table.primary_key)
            if table.cursor and highest.value is not None:
                state.set_watermark(warehouse, key, highest.value)
        report.seconds = time.perf_counter() - started
        log.info("%s -> %s: %s", report.source, report.table, report.as_dict())
        reports.append(report)
    return reports


def load_all(config: LoadersConfig, warehouse: Warehouse) -> list[TableReport]:
    """Every configured source into ``warehouse``: SQLite tables, SQL database tables, then file
    streams (what ``make load`` does, in one process)."""
    reports = [r for name, source in config.sqlite.items() for r in load_sqlite(name, source, warehouse)]
    reports += [r for name, source in config.sql.items() for r in load_sql(name, source, warehouse)]
    reports += [load_files(name, stream, warehouse) for name, stream in config.files.items()]
    return reports


def load_files(name: str, stream: FileStreamConfig, warehouse: Warehouse) -> TableReport:
    """``transactional``: append new files, one transaction per file; a changed file replaces
    exactly its own rows; a re-run loads nothing.

    ``catalog``: the current set of files is the whole truth, swapped in atomically (an empty
    source empties the table); an unchanged set loads nothing.
    """
    started = time.perf_counter()
    report = TableReport(f"files:{name}", f"{stream.target_schema}.{stream.table}")
    files = file_source.list_files(stream)
    seen = state.read_manifest(warehouse, name)
    if stream.strategy == "catalog":
        _load_catalog(name, stream, warehouse, files, seen, report)
    else:
        _load_transactional(name, stream, warehouse, files, seen, report)
    report.seconds = time.perf_counter() - started
    log.info("%s -> %s: %s", report.source, report.table, report.as_dict())
    return report


def _load_transactional(
    name: str,
    stream: FileStreamConfig,
    warehouse: Warehouse,
    files: list[file_source.SourceFile],
    seen: dict[str, state.ManifestEntry],
    report: TableReport,
) -> None:
    todo = [f for f in files if f.path not in seen or seen[f.path].fingerprint != f.fingerprint]
    report.files_skipped = len(files) - len(todo)
    with file_source.reader() as con:
        for source_file in todo:
            loaded_at = state.now()
            data, rejects = file_source.read_file(con, source_file, stream, name, loaded_at)
            with warehouse.transaction():
                if source_file.path in seen:  # changed since its last load: its old rows go
                    report.result.deleted += warehouse.delete_where(
                        stream.target_schema, stream.table, file_source.SOURCE_FILE, [source_file.path]
                    )
                report.result.inserted += warehouse.append(
                    stream.target_schema, stream.table, [_stamp(data, loaded_at)]
                )
                report.rejected += state.record_rejects(warehouse, rejects)
                state.record_files(warehouse, name, [_entry(source_file, data.num_rows, loaded_at)])
            report.read += data.num_rows + rejects.num_rows
            report.files_loaded += 1


def _load_catalog(
    name: str,
    stream: FileStreamConfig,
    warehouse: Warehouse,
    files: list[file_source.SourceFile],
    seen: dict[str, state.ManifestEntry],
    report: TableReport,
) -> None:
    current = {f.path: f.fingerprint for f in files}
    if seen and current == {path: entry.fingerprint for path, entry in seen.items()}:
        report.files_skipped = len(files)
        return
    loaded_at = state.now()
    entries: list[state.ManifestEntry] = []
    all_rejects: list[pa.Table] = []
    with file_source.reader() as con:

        def batches() -> Iterator[pa.Table]:
            if not files:  # still the stream's columns: an empty source empties the table
                yield _stamp(file_source.empty_table(stream), loaded_at)
            for source_file in files:
                data, rejects = file_source.read_file(con, source_file, stream, name, loaded_at)
                report.read += data.num_rows + rejects.num_rows
                all_rejects.append(rejects)
                entries.append(_entry(source_file, data.num_rows, loaded_at))
                yield _stamp(data, loaded_at)

        with warehouse.transaction():
            report.result.inserted = warehouse.replace(stream.target_schema, stream.table, batches())
            report.result.deleted = sum(e.rows for e in seen.values())
            for rejects in all_rejects:
                report.rejected += state.record_rejects(warehouse, rejects)
            state.replace_manifest(warehouse, name, entries)
    report.files_loaded = len(files)


def _entry(source_file: file_source.SourceFile, rows: int, loaded_at: datetime) -> state.ManifestEntry:
    return state.ManifestEntry(source_file.path, source_file.size, source_file.fingerprint, rows, loaded_at)


__all__ = ["TableReport", "load_files", "load_sql", "load_sqlite"]
