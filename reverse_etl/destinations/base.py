"""The interface every destination implements, and what it is handed.

The engine has classified every record of the model against the sync state
(``reverse_etl.records``). A destination declares how its records are keyed and rendered
(``shape``), says what it lost since the last run (``drift``), writes the batches of records its
mode needs (``write``) and, after the state is updated but before the commit, deletes or swaps
(``finish``). It sees the records only as Arrow batches and the state only through
``StateView``; it never touches the warehouse source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from reverse_etl.counts import SyncCounts
from reverse_etl.records import Plan, Records, RecordShape
from reverse_etl.schema_change import SchemaChange


@dataclass(frozen=True)
class Drift:
    """What the destination no longer holds of what the state says it holds."""

    all_lost: bool = False  # the table is gone
    lost: str | None = None  # a DuckDB query of the lost records' identity


@dataclass
class Changes:
    """The run's records as the destination receives them: counts, and the records by kind,
    as Arrow batches or as a DuckDB query (a destination DuckDB writes to itself, Postgres)."""

    records: Records
    plan: Plan
    gone: int = 0  # records of the state the model no longer has (mirror, replace)
    schema_change: SchemaChange = field(default_factory=SchemaChange)
    on_batch: Callable[[int], None] | None = None  # told the rows of each batch handed over

    def batches(self, kinds: tuple[int, ...], rendered: bool = True) -> Iterator[pa.RecordBatch]:
        for batch in self.records.records(kinds, ordered=False, rendered=rendered):
            yield batch
            self.handed(batch.num_rows)  # the destination asked for the next one: this one is gone

    def written(self, kinds: tuple[int, ...]) -> str:
        """What is written of the records in ``kinds``, as a DuckDB query."""
        return self.records.records_sql(kinds)

    def handed(self, rows: int) -> None:
        if self.on_batch is not None:
            self.on_batch(rows)

    def arrow_schema(self) -> pa.Schema:
        return self.records.arrow_schema()


class StateView(Protocol):
    """The part of the sync state a destination may use."""

    def gone_sql(self) -> str | None:
        """A DuckDB query of the identities of the records gone from the model (None: none)."""

    def gone(self) -> Iterator[pa.RecordBatch]:
        """Those identities, as batches."""

    def pending_refresh(self) -> list[str]: ...

    def owe_refresh(self, models: list[str]) -> None: ...


class Destination(Protocol):
    # Postgres: the writes commit with the state in one transaction; Redis: they cannot, so the
    # engine marks what it is about to write as in doubt first (write-ahead)
    transactional: bool

    def shape(self, columns: list[str]) -> RecordShape:
        """How records are identified, fingerprinted and rendered, over the model's columns."""

    def drift(self, owned: int, state: str) -> Drift:
        """Cheaply, what of the ``owned`` records the state (a DuckDB relation) lists the
        destination lost."""

    def write(self, changes: Changes) -> SyncCounts:
        """Write what the mode needs; count inserted / updated / unchanged / healed."""

    def finish(self, state: StateView) -> SyncCounts:
        """After the state is updated, before the commit: ``mirror`` deletes, ``replace`` swaps."""

    def after_commit(self) -> list[str]:
        """Work that must follow the commit: refreshing serving models (their names)."""

    def close(self) -> None: ...
