"""What a loader needs from a warehouse: a small interface every target implements."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

STATE_SCHEMA = "_roundtrip"


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


class Warehouse(Protocol):
    """A destination for loaders. Writes inside ``transaction()`` commit together or not at all."""

    name: str

    def transaction(self) -> contextlib.AbstractContextManager[None]: ...

    def merge(self, schema: str, table: str, data: pa.Table, keys: list[str]) -> WriteResult:
        """Insert new keys, update changed rows, leave equal rows alone (counted as unchanged)."""

    def delete_missing(self, schema: str, table: str, keys: list[str], present: pa.Table) -> int:
        """Delete rows whose key is not in ``present`` (delete propagation)."""

    def append(self, schema: str, table: str, data: pa.Table) -> int: ...

    def delete_where(self, schema: str, table: str, column: str, values: list[str]) -> int: ...

    def replace(self, schema: str, table: str, data: pa.Table) -> int:
        """Swap the whole table for ``data`` atomically (an empty ``data`` empties it)."""

    def get_state(self, key: str) -> str | None: ...

    def set_state(self, key: str, value: str) -> None: ...

    def row_count(self, schema: str, table: str) -> int: ...

    def close(self) -> None: ...


def quote(identifier: str) -> str:
    """Double-quoted SQL identifier (DuckDB, Postgres)."""
    return '"' + identifier.replace('"', '""') + '"'


@contextlib.contextmanager
def closing(warehouse: Warehouse) -> Iterator[Warehouse]:
    try:
        yield warehouse
    finally:
        warehouse.close()
