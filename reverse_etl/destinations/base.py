"""The interface every destination implements, what it declares, and what it is handed.

A destination declares its capabilities (``Capabilities``) and how its records are keyed and
rendered (``shape``); the engine does everything else. In a run it is asked, in this order:

- ``drift``: what of the records the state vouches for does it not hold as recorded (lost,
  edited, restored from an older backup)? Cheap when nothing happened (a digest of what it
  holds, a server identity), exact when something did (it reads the records back);
- ``write``: the records of its mode, handed as ``Changes`` (counts and Arrow batches);
- ``finish``: after the writes, before the commit: delete what the model dropped (mirror) or
  swap (replace);
- ``digest``: a summary of what it holds now, kept in the state for the next ``drift``;
- ``verify``: read records back and say which are missing or differ (``roundtrip sync verify``
  and each run's ``verify_sample``);
- ``after_commit``: work that must follow the commit (refreshing serving views).

It receives what it needs as arguments (the state's view of the sync as ``Known``), never
reaches into the state or the engine, and its driver's errors leave it classified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from reverse_etl.counts import SyncCounts
from reverse_etl.records import Model, Plan, Records, RecordShape
from reverse_etl.schema_change import SchemaChange
from reverse_etl.spec import DestinationTests


@dataclass(frozen=True)
class Capabilities:
    """What the engine may rely on."""

    # the writes commit in the state's transaction (a Postgres destination in the state's
    # database); otherwise the engine marks what it is about to write in doubt first
    transactional: bool
    # records can be read back by identity (verify, verify_sample)
    verifiable: bool
    # how a record is identified: "primary key" (its columns) or "rendered key" (a template)
    keys: str
    # how values are written: "columns" (typed columns) or "json" (one JSON document)
    values: str
    # modes it can run
    modes: tuple[str, ...]
    # its digest changes with its own writes (Postgres: a summary of the rows), so it is taken
    # after them; Redis' (the server's identity) does not
    digest_moves: bool = True


@dataclass(frozen=True)
class Known:
    """What the state says of the sync, as the engine hands it to its destination."""

    state: str  # DuckDB relation: identity columns, fingerprint (NULL: unknown), recorded
    owned: int  # records the state says the destination holds
    digest: str | None  # what ``digest`` said after the last commit (None: never, or unknown)
    columns: dict[str, str] | None  # the model columns last sent, in order, with their DuckDB types (None: unknown)
    retired: str | None = None  # DuckDB relation: identities this sync wrote, then deleted


@dataclass(frozen=True)
class Drift:
    """What the destination does not hold as the state says."""

    lost: str | None = None  # DuckDB table: identities lost or held wrong (written again: HEALED)
    extra: str | None = None  # DuckDB table: identities this sync once deleted, back in it
    checked: int = 0  # records read back to find out
    reason: str | None = None  # why it looked (for the log), None: it did not need to
    seen: str | None = None  # the destination's digest as drift saw it (``hold`` checks it again)
    columns: list[str] | None = None  # the columns that digest is over


@dataclass
class Changes:
    """The run's records as the destination receives them: counts, and the records by kind,
    as Arrow batches or as a DuckDB query."""

    records: Records
    plan: Plan
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


@dataclass(frozen=True)
class Written:
    """What ``write`` did: its counts, and the records a write policy kept from it (DuckDB
    tables of identities): ``kept``, the destination holds another version (``create_only``
    found the key there; the state keeps what it said of them), ``absent``, it holds none
    (``update_only`` found no row; the state forgets them)."""

    counts: SyncCounts
    kept: str | None = None
    absent: str | None = None


@dataclass(frozen=True)
class Finished:
    counts: SyncCounts
    refresh_due: list[str] = field(default_factory=list)  # serving models to refresh after the commit


@dataclass(frozen=True)
class Verified:
    """Records read back: a DuckDB table of identity columns, ``__rt_problem`` ('missing',
    'differs') and ``__rt_columns`` (the columns that differ, where the destination can tell)."""

    table: str
    checked: int
    problems: int


class Destination(Protocol):
    capabilities: Capabilities

    def shape(self, model: Model) -> RecordShape:
        """How records are identified, fingerprinted, rendered and checked."""

    def drift(self, records: Records, known: Known, sample: int) -> Drift:
        """What the destination no longer holds as ``known`` says; ``sample``: records to read
        back even when nothing looks wrong (-1: every record)."""

    def hold(self) -> None:
        """At the start of the run's transaction, before ``drift``: keep other writers out until
        the commit, so that what drift sees is what the run writes over."""

    def write(self, changes: Changes) -> Written:
        """Write what the mode needs; count inserted / updated / unchanged / healed / skipped."""

    def finish(self, records: Records, gone: str | None, owed_refresh: list[str]) -> Finished:
        """After the writes, before the commit: ``gone`` (a DuckDB query of identities) deleted
        (mirror), or the table swapped (replace)."""

    def digest(self, columns: list[str]) -> str | None:
        """A summary of what the destination holds now (over the model ``columns`` written)."""

    def verify(self, records: Records, identities: str | None) -> Verified:
        """Read back the records of ``identities`` (a DuckDB query; None: every record of the
        model) and compare them with what the model renders now."""

    def held(self, records: Records) -> str | None:
        """The identities the destination holds that this sync could have written (a DuckDB
        table; None: nothing), to re-own a sync whose state was lost."""

    def seal(self, records: Records) -> str:
        """A summary of what the destination holds that the run would change (``sync plan``:
        ``apply`` refuses a plan whose seal no longer matches)."""

    def fields(self, records: Records, identities: str) -> str:
        """The fields the records of ``identities`` would change (a DuckDB table: identity,
        ``__rt_column``, ``__rt_old``, ``__rt_new``), for a dry run's field-level diff."""

    def extra(self, records: Records) -> str | None:
        """The identities the destination holds that the model does not render (a DuckDB table)."""

    def test(self, records: Records, tests: DestinationTests, expected: int) -> list[str]:
        """``meta.sync.tests`` on what the destination now holds (``expected``: the mart's
        records); one line per failure."""

    def commit(self) -> None:
        """Outside the state's transaction, after the writes and before the state commits: make
        them durable (a Postgres destination in another database; nothing for the others)."""

    def rollback(self) -> None:
        """The run failed before its commit: undo what ``commit`` would have made durable."""

    def after_commit(self, refresh_due: list[str]) -> list[str]:
        """Work that must follow the commit: refreshing serving models (their names)."""

    def close(self) -> None: ...


def identity_columns(shape: RecordShape) -> list[str]:
    return list(shape.identity)


__all__ = [
    "Capabilities",
    "Changes",
    "Destination",
    "Drift",
    "Finished",
    "Known",
    "Verified",
    "Written",
    "identity_columns",
]
