"""What a loader needs from a warehouse: a small interface every target implements.

Every write goes through a staging table first, then one set-based statement generated from the
declared keys (``loaders.warehouse.sql``). Writes inside ``transaction()`` commit together or not
at all, so a failed run leaves the destination as it was, and the loader's own bookkeeping
(watermarks, file manifest: ``loaders.state``) commits with the rows it describes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa

STATE_SCHEMA = "_roundtrip"
LOADED_AT = "_loaded_at"  # stamped by the loaders; never a reason to count a row as changed

Batches = Iterable[pa.Table]


def stamp(data: pa.Table, loaded_at: datetime) -> pa.Table:
    """``data`` with its load time in ``_loaded_at``."""
    return data.append_column(LOADED_AT, pa.repeat(pa.scalar(loaded_at, pa.timestamp("us", tz="UTC")), data.num_rows))


@dataclass
class WriteResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0

    def __add__(self, other: WriteResult) -> WriteResult:
        return WriteResult(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
            self.deleted + other.deleted,
        )


@dataclass(frozen=True)
class ParquetExport:
    """One table of an export: its selected columns as Snappy Parquet under ``folder``."""

    schema: str
    table: str
    columns: list[str] | None  # None: every column
    folder: str  # {destination}/{YYYYMMDD}/{table}: gs://, s3:// or a local folder
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options
    single_file: bool = False  # BigQuery: one {table}.parquet instead of part-*.parquet shards


class Warehouse(Protocol):
    """A destination for loaders. ``schema`` is a schema (DuckDB, Postgres) or a dataset (BigQuery)."""

    name: str

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Writes inside commit together or not at all (nested calls join the outer one)."""

    def merge(self, schema: str, table: str, batches: Batches, keys: list[str]) -> WriteResult:
        """Stage every batch, then one MERGE: insert new keys, update changed rows, leave equal
        rows alone (counted as unchanged). A NULL or repeated key in the staged rows is an error."""

    def delete_missing(self, schema: str, table: str, keys: list[str], present: Batches) -> int:
        """Delete rows whose key is not in ``present`` (delete propagation)."""

    def append(self, schema: str, table: str, batches: Batches) -> int: ...

    def ensure_table(self, schema: str, table: str, columns: pa.Schema) -> None:
        """Create the table with these columns, or add those it lacks (additive evolution)."""

    def delete_where(
        self, schema: str, table: str, column: str, values: list[str], scope: dict[str, str] | None = None
    ) -> int:
        """Delete rows whose ``column`` is one of ``values`` (and, with ``scope``, whose other
        columns equal the given texts); returns how many."""

    def update_where(
        self, schema: str, table: str, column: str, old: str, new: str, scope: dict[str, str] | None = None
    ) -> int:
        """Set ``column`` to ``new`` where it is ``old`` (and ``scope`` matches); returns how many."""

    def replace(self, schema: str, table: str, batches: Batches) -> int:
        """Swap the table's rows for ``batches`` atomically (no batch at all empties it)."""

    def read_table(self, schema: str, table: str) -> pa.Table | None:
        """A whole (small) table, or None when it does not exist: loader state only."""

    def export_parquet(self, export: ParquetExport) -> tuple[str, int]:
        """Write the table's selected columns as Snappy Parquet under ``export.folder``:
        (what was written, rows)."""

    def close(self) -> None: ...
