"""The interface every warehouse source implements."""

from __future__ import annotations

from typing import Any, Protocol

from reverse_etl.spec import ModelRef


class WarehouseSource(Protocol):
    name: str  # the dbt target it reads: duckdb, postgres, bigquery

    def relation(self, con: Any, scratch: str, model: ModelRef, columns: list[str] | None) -> str:
        """Make the model readable in ``con`` (the run's DuckDB connection; ``scratch`` is its
        writable database) and return the DuckDB relation to select it from. ``columns``: the
        model columns the sync needs (None: all); a copying source reads only those."""

    def describe(self, model: ModelRef) -> str:
        """Where the model is read from, for messages (no credentials)."""
