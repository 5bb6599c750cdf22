"""Load jobs: wire a source reader to a warehouse, keep watermarks and the file manifest.

Each job commits a table's rows together with the bookkeeping that describes them (watermark,
manifest rows, held-back lines, rejects) in one warehouse transaction, and returns counts that
are true.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from loaders import state
from loaders.config import FileStreamConfig, LoadersConfig, SqliteSourceConfig, SqliteTableConfig, SqlSourceConfig
from loaders.file_outcome import read_one
from loaders.sources import files as file_source
from loaders.sources import sql as sql_source
from loaders.sources import sqlite as sqlite_source
from loaders.warehouse.base import Warehouse, WriteResult, stamp
from roundtrip.core.read_ahead import read_ahead

log = logging.getLogger(__name__)

Progress = Callable[[str, int], None]  # told (source, rows read) as a load goes

# the transactional strategy commits files together until they hold this many rows: a commit per
# small file costs more than reading it (DuckDB writes row groups straight to the file only for
# big inserts), and a crash still keeps every group committed before it
GROUP_ROWS = 500_000


@dataclass
class TableReport:
    source: str
    table: str
    read: int = 0
    result: WriteResult = field(default_factory=WriteResult)
    rejected: int = 0  # rows held back for a value that does not parse as its declared type
    held_back: int = 0  # lines (and whole files) that could not be read, now in the quarantine
    files_loaded: int = 0
    files_skipped: int = 0
    files_moved: int = 0  # renamed or moved files recognized by their content: not loaded again
    seconds: float = 0.0
    progress: Progress | None = field(default=None, repr=False, compare=False)

    def count_read(self, rows: int) -> None:
        """``rows`` more were read (and the progress display is told)."""
        self.read += rows
        if self.progress is not None:
            self.progress(self.source, rows)

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
            "held_back": self.held_back,
            "files_loaded": self.files_loaded,
            "files_skipped": self.files_skipped,
            "files_moved": self.files_moved,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _Highest:
    """The largest cursor value seen so far: the next run's watermark."""

    value: object | None = None

    def offer(self, candidate: object | None) -> None:
        if candidate is not None and (self.value is None or candidate > self.value):  # type: ignore[operator]
            self.value = candidate


Batches = Iterator[tuple[pa.Table, object | None]]  # rows, the largest cursor value among them


def _load_table(
    report: TableReport,
    warehouse: Warehouse,
    target_schema: str,
    table: str,
    primary_key: list[str],
    cursor: str | None,
    read: Callable[[object | None], Batches],
    full_refresh: bool,
    after_merge: Callable[[], int] | None = None,
) -> TableReport:
    """One table of a database source: rows since the stored watermark (all of them without a
    cursor or with ``full_refresh``) -> staging + one MERGE on the keys; ``after_merge`` (delete
    propagation) runs in the same transaction, and so does the new watermark."""
    started = time.perf_counter()
    key = f"{report.source}:{table}"
    since = None if full_refresh or not cursor else state.get_watermark(warehouse, key)
    loaded_at = state.now()
    highest = _Highest(since)

    def stamped() -> Iterator[pa.Table]:
        # the source reads its next batch while the warehouse writes this one
        with contextlib.closing(read_ahead(read(since))) as batches:
            for batch, cursor_max in batches:
                report.count_read(batch.num_rows)
                highest.offer(cursor_max)
                yield stamp(batch, loaded_at)

    with warehouse.transaction():
        report.result += warehouse.merge(target_schema, table, stamped(), primary_key)
        if after_merge is not None:
            report.result.deleted += after_merge()
        if cursor and highest.value is not None:
            state.set_watermark(warehouse, key, highest.value)
    report.seconds = time.perf_counter() - started
    log.debug("%s -> %s: %s", report.source, report.table, report.as_dict())
    return report


def load_sqlite(
    name: str,
    source: SqliteSourceConfig,
    warehouse: Warehouse,
    full_refresh: bool = False,
    progress: Progress | None = None,
) -> list[TableReport]:
    """Every configured table: staging + one MERGE on the keys, incremental by cursor, optional
    delete propagation; the watermark commits in the same transaction as the rows it covers."""
    path = Path(source.path)
    return [
        _load_table(
            TableReport(f"sqlite:{name}", f"{source.target_schema}.{table.name}", progress=progress),
            warehouse,
            source.target_schema,
            table.name,
            table.primary_key,
            table.cursor,
            functools.partial(sqlite_source.read_batches, path, table),
            full_refresh,
            functools.partial(_propagate_deletes, path, table, source.target_schema, warehouse)
            if table.delete_propagation
            else None,
        )
        for table in source.tables
    ]


def _propagate_deletes(path: Path, table: SqliteTableConfig, schema: str, warehouse: Warehouse) -> int:
    keys = sqlite_source.read_keys(path, table)
    return warehouse.delete_missing(schema, table.name, table.primary_key, [keys])


def load_sql(
    name: str,
    source: SqlSourceConfig,
    warehouse: Warehouse,
    full_refresh: bool = False,
    progress: Progress | None = None,
) -> list[TableReport]:
    """Tables of a SQL database (Postgres, MySQL/MariaDB, SQLite): full, or incremental by cursor."""
    return [
        _load_table(
            TableReport(f"sql:{name}", f"{source.target_schema}.{table.name}", progress=progress),
            warehouse,
            source.target_schema,
            table.name,
            table.primary_key,
            table.cursor,
            functools.partial(sql_source.read_table, source, table),
            full_refresh,
        )
        for table in source.tables
    ]


def load_all(config: LoadersConfig, warehouse: Warehouse, progress: Progress | None = None) -> list[TableReport]:
    """Every configured source into ``warehouse``: SQLite tables, SQL database tables, then file
    streams (what ``make load`` does, in one process)."""
    reports = [r for n, source in config.sqlite.items() for r in load_sqlite(n, source, warehouse, progress=progress)]
    reports += [r for n, source in config.sql.items() for r in load_sql(n, source, warehouse, progress=progress)]
    reports += [load_files(n, stream, warehouse, progress) for n, stream in config.files.items()]
    return reports


def load_files(
    name: str, stream: FileStreamConfig, warehouse: Warehouse, progress: Progress | None = None
) -> TableReport:
    """``transactional``: new files, one transaction per file; a changed file replaces exactly
    its own rows; a renamed file is recognized by its content (its rows follow it, nothing is
    loaded twice); a file gone from the folder keeps or drops its rows (``deleted_files``); a
    re-run loads nothing.

    ``catalog``: the current set of files is the whole truth, swapped in atomically (an empty
    source empties the table); an unchanged set loads nothing.

    Either way, each file is read once by ``read_one``: a line that cannot be read is held back
    in the quarantine and the rest of its file loads; a file that cannot be read at all (or an
    entry that is no file: a link that loops or leads nowhere) is held back whole and the others
    load. A held-back file is read again only when its content changes; one that changed while
    it was read is read again at the next run, whatever it holds then.
    """
    started = time.perf_counter()
    report = TableReport(f"files:{name}", f"{stream.target_schema}.{stream.table}", progress=progress)
    listing = file_source.list_files(stream)
    seen = state.read_manifest(warehouse, name)
    if stream.columns is not None:  # the table has its declared columns, rows or not (dbt reads them)
        warehouse.ensure_table(
            stream.target_schema, stream.table, stamp(file_source.empty_table(stream), state.now()).schema
        )
    if stream.strategy == "catalog":
        _load_catalog(name, stream, warehouse, listing.files, seen, report)
    else:
        _Transactional(name, stream, warehouse, report, listing, seen).run()
    report.seconds = time.perf_counter() - started
    log.debug("%s -> %s: %s", report.source, report.table, report.as_dict())
    if report.held_back:
        log.warning(
            "%s: %d line(s) or file(s) held back (python -m loaders quarantine --stream %s)",
            report.source,
            report.held_back,
            name,
        )
    return report


@dataclass
class _Transactional:
    """The transactional strategy for one run of a stream. Files are read one at a time; their
    rows, manifest rows and held-back lines are written together, in transactions of about
    GROUP_ROWS rows (one statement per table and group, not per file); whatever changes rows
    already in the warehouse (a changed file's old rows, a move) is written in order first."""

    name: str
    stream: FileStreamConfig
    warehouse: Warehouse
    report: TableReport
    listing: file_source.Listing
    seen: dict[str, state.ManifestEntry]
    _rows: list[pa.Table] = field(default_factory=list)
    _row_count: int = 0
    _entries: dict[str, state.ManifestEntry] = field(default_factory=dict)
    _quarantine: list[pa.Table] = field(default_factory=list)
    _rejects: list[pa.Table] = field(default_factory=list)

    def run(self) -> None:
        present = {f.path for f in self.listing.files}
        files = self.listing.files
        with file_source.reader() as con:
            done = 0
            while done < len(files):
                with self.warehouse.transaction():  # a group: committed together
                    while done < len(files) and self._row_count < GROUP_ROWS:
                        self._one(con, files[done], present)
                        done += 1
                    self._flush()
            with self.warehouse.transaction():
                if self.listing.folder_exists:
                    for path in [p for p in self.seen if p not in present]:
                        self._gone(self.seen[path])
                elif self.seen:
                    log.warning("%s: %s cannot be listed; the manifest is left as it is", self.name, self.stream.path)
                # a copy whose original just went (and took its rows with it) loads now
                for source_file in files:
                    entry = self.seen.get(source_file.path)
                    if entry is not None and entry.status == state.DUPLICATE and not self._original_holds(entry):
                        self._one(con, source_file, present)
                self._flush()

    # ------------------------------------------------------------ one file

    def _original_holds(self, entry: state.ManifestEntry) -> bool:
        """A duplicate's original still has the rows of this content."""
        original = self.seen.get(entry.original_path or "")
        return (
            original is not None and original.status in state.HAS_ROWS and original.content_hash == entry.content_hash
        )

    def _one(self, con: object, source_file: file_source.SourceFile, present: set[str]) -> None:
        entry = self.seen.get(source_file.path)
        unchanged = entry is not None and entry.fingerprint == source_file.fingerprint
        if entry is not None and unchanged and (entry.status != state.DUPLICATE or self._original_holds(entry)):
            if entry.status == state.DELETED:  # back, unchanged: its rows are still there
                self._record(dataclasses.replace(entry, status=state.LOADED))
            self.report.files_skipped += 1
            return
        if self._same_content(source_file, entry, present):
            return
        self._load(con, source_file, entry)

    def _same_content(
        self, source_file: file_source.SourceFile, entry: state.ManifestEntry | None, present: set[str]
    ) -> bool:
        """A file whose bytes are already loaded under another path (moved: its rows follow it;
        copied: not loaded again), or under this path (rewritten with the same bytes)."""
        if source_file.size == 0:
            return False
        candidates = [
            e
            for e in self.seen.values()
            if e.status in state.HAS_ROWS and e.size == source_file.size and e.content_hash
        ]
        if not candidates:
            return False
        content = file_source.content_hash(source_file, self.stream)
        if entry is not None and entry.status in state.HAS_ROWS and entry.content_hash == content:
            self._record(dataclasses.replace(entry, fingerprint=source_file.fingerprint, status=state.LOADED))
            self.report.files_skipped += 1
            return True
        matches = sorted(
            (e for e in candidates if e.path != source_file.path and e.content_hash == content),
            key=lambda e: e.path in present,  # a file that is gone first: then it moved
        )
        if not matches:
            return False
        original = matches[0]
        if entry is not None:
            self._drop_rows(entry)
        if original.path in present:
            log.warning("%s: %s has the content of %s: not loaded again", self.name, source_file.path, original.path)
            self.report.files_skipped += 1
            new = state.ManifestEntry(
                path=source_file.path,
                size=source_file.size,
                fingerprint=source_file.fingerprint,
                rows=0,
                loaded_at=state.now(),
                content_hash=content,
                status=state.DUPLICATE,
                original_path=original.path,
            )
        else:
            self._flush()
            moved = self.warehouse.update_where(
                self.stream.target_schema, self.stream.table, file_source.SOURCE_FILE, original.path, source_file.path
            )
            state.move_held_back(self.warehouse, self.name, original.path, source_file.path)
            state.forget_files(self.warehouse, self.name, [original.path])
            del self.seen[original.path]
            log.info("%s: %s moved to %s (its %d rows follow it)", self.name, original.path, source_file.path, moved)
            self.report.files_moved += 1
            new = dataclasses.replace(
                original,
                path=source_file.path,
                fingerprint=source_file.fingerprint,
                status=state.MOVED,
                original_path=original.path,
            )
        self._record(new)
        return True

    def _load(self, con: object, source_file: file_source.SourceFile, entry: state.ManifestEntry | None) -> None:
        outcome = read_one(con, source_file, self.stream, self.name, state.now())
        if entry is not None:  # changed since its last load: its old rows go
            self._drop_rows(entry)
        if outcome.rows is not None:
            self._rows.append(outcome.rows)
            self._row_count += outcome.rows.num_rows
        self._quarantine.append(outcome.quarantine)
        self.report.held_back += outcome.quarantine.num_rows
        if outcome.rejects.num_rows:
            self._rejects.append(outcome.rejects)
            self.report.rejected += outcome.rejects.num_rows
        self._record(outcome.entry)
        self.report.count_read(outcome.records)
        self.report.files_loaded += 1

    # ------------------------------------------------------------ writes

    def _record(self, entry: state.ManifestEntry) -> None:
        self._entries[entry.path] = entry
        self.seen[entry.path] = entry

    def _flush(self) -> None:
        """Write what is pending (inside the open transaction)."""
        if self._rows:
            data = pa.concat_tables(self._rows, promote_options="default")  # no copy
            self.report.result.inserted += self.warehouse.append(self.stream.target_schema, self.stream.table, [data])
        for table, rows in ((state.QUARANTINE_TABLE, self._quarantine), (state.REJECTS_TABLE, self._rejects)):
            rows = [r for r in rows if r.num_rows]
            if rows:
                self.warehouse.append(state.STATE_SCHEMA, table, [pa.concat_tables(rows)])
        state.record_files(self.warehouse, self.name, list(self._entries.values()))
        self._rows, self._row_count, self._entries, self._quarantine, self._rejects = [], 0, {}, [], []

    def _drop_rows(self, entry: state.ManifestEntry) -> None:
        """A file's rows, held-back lines and rejected values leave the warehouse."""
        self._flush()
        if entry.status in state.HAS_ROWS:
            self.report.result.deleted += self.warehouse.delete_where(
                self.stream.target_schema, self.stream.table, file_source.SOURCE_FILE, [entry.path]
            )
        state.forget_held_back(self.warehouse, self.name, [entry.path])

    def _gone(self, entry: state.ManifestEntry) -> None:
        """A file no longer in the folder: ``deleted_files: keep`` keeps its rows (the manifest
        says it is deleted), ``drop`` deletes them; a file without rows is simply forgotten."""
        if entry.status in state.HAS_ROWS and self.stream.deleted_files == "keep":
            if entry.status != state.DELETED:
                log.info("%s: %s is gone; its %d rows are kept", self.name, entry.path, entry.rows)
                self._record(dataclasses.replace(entry, status=state.DELETED))
            return
        self._drop_rows(entry)
        state.forget_files(self.warehouse, self.name, [entry.path])
        if entry.status in state.HAS_ROWS:
            log.info("%s: %s is gone; its rows were deleted (deleted_files: drop)", self.name, entry.path)
        del self.seen[entry.path]


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
    held_back: list[pa.Table] = []
    all_rejects: list[pa.Table] = []
    contents: dict[str, str] = {}  # content hash -> the first path loaded with it
    with file_source.reader() as con:

        def batches() -> Iterator[pa.Table]:
            loaded = False
            for source_file in files:
                outcome = read_one(con, source_file, stream, name, loaded_at)
                content = outcome.entry.content_hash
                if outcome.rows is not None and source_file.size and content in contents:
                    # the same bytes twice in one set: once
                    log.warning(
                        "%s: %s has the content of %s: not loaded again", name, source_file.path, contents[content]
                    )
                    entries.append(
                        dataclasses.replace(
                            outcome.entry, rows=0, status=state.DUPLICATE, held_back=0, original_path=contents[content]
                        )
                    )
                    continue
                if outcome.rows is not None and content:
                    contents[content] = source_file.path
                entries.append(outcome.entry)
                held_back.append(outcome.quarantine)
                all_rejects.append(outcome.rejects)
                report.count_read(outcome.records)
                if outcome.rows is not None:
                    loaded = True
                    yield outcome.rows
            if not loaded:  # still the stream's columns: an empty source empties the table
                yield stamp(file_source.empty_table(stream), loaded_at)

        with warehouse.transaction():
            report.result.inserted = warehouse.replace(stream.target_schema, stream.table, batches())
            report.result.deleted = sum(e.rows for e in seen.values())
            for table in (state.QUARANTINE_TABLE, state.REJECTS_TABLE):
                warehouse.delete_where(state.STATE_SCHEMA, table, "stream", [name])
            for rejects in all_rejects:
                report.rejected += state.record_rejects(warehouse, rejects)
            for rows in held_back:
                report.held_back += state.record_quarantine(warehouse, rows)
            state.replace_manifest(warehouse, name, entries)
    report.files_loaded = len(files)


__all__ = ["TableReport", "load_all", "load_files", "load_sql", "load_sqlite"]
