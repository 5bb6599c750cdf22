"""The interface every warehouse source implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from reverse_etl.spec import ModelRef


@dataclass(frozen=True)
class Since:
    """Rows whose ``column`` (a model column) is at least ``value`` (text of DuckDB type ``kind``),
    and rows where it is NULL: a row without a cursor cannot say it is older than the watermark,
    so every cursor run reads it (else a new row added without one waited for the full diff)."""

    column: str
    value: str
    kind: str

    def duckdb(self) -> str:
        """The predicate in DuckDB SQL (DuckDB reads the DuckDB and Postgres warehouses)."""
        from roundtrip.core.sql import duck_ident, literal

        column = duck_ident(self.column)
        return f"({column} >= cast({literal(self.value)} as {self.kind}) or {column} is null)"

    def bigquery(self) -> str:
        """The predicate in BigQuery SQL (a read session's row restriction)."""
        from roundtrip.core.sql import literal, quote_backtick

        kind = self.kind.upper()
        if "TIME ZONE" in kind or kind == "TIMESTAMPTZ":
            target = "TIMESTAMP"
        elif kind.startswith("TIMESTAMP"):
            target = "DATETIME"
        elif kind == "DATE":
            target = "DATE"
        else:
            target = "INT64" if "INT" in kind else "NUMERIC"
        column = quote_backtick(self.column)
        return f"({column} >= CAST({literal(self.value)} AS {target}) OR {column} IS NULL)"


class WarehouseSource(Protocol):
    name: str  # the dbt target it reads: duckdb, postgres, bigquery

    def relation(
        self, con: Any, scratch: str, model: ModelRef, columns: list[str] | None, since: Since | None = None
    ) -> str:
        """Make the model readable in ``con`` (the run's DuckDB connection; ``scratch`` is its
        writable database) and return the DuckDB relation to select it from. ``columns``: the
        model columns the sync needs (None: all); a copying source reads only those. ``since``:
        only the rows whose cursor column reached a value (change detection by cursor)."""

    def describe(self, model: ModelRef) -> str:
        """Where the model is read from, for messages (no credentials)."""
