"""A sync's records, classified against its state in the run's own DuckDB.

The model is readable in a DuckDB connection of the run (``reverse_etl.sources`` attached or
copied it there). DuckDB does the per-row work in SQL generated from the sync's settings (never
from a model's logic): it renames columns, flags rows whose key is NULL or shared by several
rows, and gives each record, in the shape its destination declares (``RecordShape``):

- its identity: typed columns (a Postgres destination's primary key; a Redis key), the same
  columns the sync state keys its records by;
- ``__rt_fp``: a 64-bit fingerprint of exactly what is written, for change detection;
- ``__rt_rows``: how many model rows the record carries (Redis ``list`` values group rows);
- whatever else the destination writes from.

The sync's state (``reverse_etl.state``: a table of identity and fingerprint, from the run's
local cache or read from Postgres) is joined in one set-based pass (``classify``) that marks
every record NEW, CHANGED, UNCHANGED or HEALED (the state says the destination holds it, the
destination lost it). Only what a destination needs then leaves DuckDB, in Arrow record batches
of ``batch_rows``. DuckDB's memory is capped and it spills to the scratch folder, so memory is
bounded by the batch size, not the table size.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from reverse_etl.errors import SyncError
from reverse_etl.spec import RESERVED_PREFIX, SyncSpec
from roundtrip.core.sql import literal, quote

log = logging.getLogger(__name__)

FINGERPRINT, ROWS = "__rt_fp", "__rt_rows"
REASON, ROW, ROW_KEY = "__rt_reason", "__rt_row", "__rt_row_key"
CHANGE = "__rt_change"
# what the state says of a record (the values of __rt_change)
UNCHANGED, NEW, CHANGED, HEALED = 0, 1, 2, 3
SENT = (NEW, CHANGED, HEALED)  # what an upsert writes
EVERY = (NEW, CHANGED, UNCHANGED, HEALED)
# a sync's state before its first commit: no records, the identity columns' types (see use)
EMPTY_STATE = "temp.empty_state"


def json_object(columns: list[str]) -> str:
    return f"to_json(struct_pack({', '.join(f'{quote(c)} := {quote(c)}' for c in columns)}))::varchar"


def fingerprint_of(expression: str) -> str:
    """DuckDB's 64-bit ``hash`` of an expression as a signed BIGINT (see ``fingerprint``)."""
    return f"(hash({expression})::hugeint - 9223372036854775808)::bigint"


def fingerprint(columns: list[str]) -> str:
    """DuckDB's 64-bit ``hash`` of ``columns`` as a signed BIGINT (Postgres has no unsigned type).

    One hash over the columns themselves, not over a rendering of them (JSON, text): ten times
    cheaper than an md5 of the row as JSON. A collision (2^-64 per changed record) would miss
    one update; a DuckDB release that changed ``hash`` would make every record look changed
    once (one full resend, no wrong data)."""
    args = ", ".join(quote(c) for c in columns)
    return f"(hash({args})::hugeint - 9223372036854775808)::bigint"


@dataclass(frozen=True)
class RecordShape:
    """How a destination identifies and renders its records, as DuckDB SQL over the model's
    projected, accepted rows (the destination module writes these; the engine runs them)."""

    # the record's identity: record column -> its SQL over one model row (rows sharing it form
    # one record); the state keys records by these columns, typed as the model has them
    identity: dict[str, str]
    # SELECT ... FROM {rows} (the accepted model rows): the identity columns, FINGERPRINT, ROWS,
    # and the columns ``written`` joins back on; what is written is not rendered here: only the
    # records that are sent are
    records: str
    # SELECT ... FROM {rows} m JOIN {records} c ...: the batches a destination writes, rendered
    # from the model rows of the classified records in {records}; None: the classified records
    written: str | None = None
    required: dict[str, list[str]] = field(default_factory=dict)  # what -> model columns it needs
    # what a dry run shows of a record that carries its own rendering: column -> label (JSON
    # text is shown parsed); empty: the model's columns
    shown: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    """What the classification found: records per kind, and the model rows they carry."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    healed: int = 0
    rows: int = 0

    @property
    def sent(self) -> int:
        return self.new + self.changed + self.healed

    @property
    def records(self) -> int:
        return self.new + self.changed + self.unchanged + self.healed


class Scratch:
    """The run's own DuckDB: an in-memory connection with a scratch database in a temporary
    folder (classification, copies of remote models), memory capped, spilling to that folder;
    removed when the run ends. Use as a context manager."""

    def __init__(self, memory_limit: str) -> None:
        self.memory_limit = memory_limit
        self.con: Any = None
        self.folder: Path | None = None
        # a unique name: DuckDB shares one instance between the connections of a process
        self.db = f"rt_{uuid.uuid4().hex[:12]}"
        # in memory like the temp schema, but seen by every cursor of the run's connection (a
        # temp table is not): the classified records, read by a destination writing on its own
        # cursor while the state's transaction runs on the connection (reverse_etl.engine)
        self.shared = f"{self.db}_mem"

    def __enter__(self) -> Scratch:
        from roundtrip.core.duckdb_extensions import connect

        self.folder = Path(tempfile.mkdtemp(prefix="reverse_etl-"))
        try:
            self.con = connect(":memory:")
            self.con.execute(f"set memory_limit = '{self.memory_limit}'")
            self.con.execute(f"set temp_directory = {literal(str(self.folder / 'spill'))}")
            self.con.execute("set preserve_insertion_order = false")  # nothing here depends on it
            self.con.execute(f"attach {literal(str(self.folder / 'run.duckdb'))} as {self.db} (read_write)")
            self.con.execute(f"attach ':memory:' as {self.shared}")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.con is not None:
            with contextlib.suppress(Exception):
                self.con.close()
            self.con = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


class Records:
    """One sync's records in the run's DuckDB: read, checked, classified, streamed."""

    def __init__(self, scratch: Scratch, spec: SyncSpec, relation: str, describe: str) -> None:
        self.spec = spec
        self.settings = spec.settings
        self.con = scratch.con
        self.db = scratch.db
        self.shared = scratch.shared
        self.relation = relation
        self.where = describe
        self.shape: RecordShape | None = None
        self.state = EMPTY_STATE  # the state relation classify joins (see use_state)
        self.lost_relation: str | None = None
        self._clean: bool | None = None  # no NULL and no shared key in the model: no reject pass
        try:
            described = self.con.execute(f"describe {self.projected()}").fetchall()
        except Exception as exc:
            raise SyncError(f"sync {spec.name}: cannot read model {spec.model} ({describe}): {exc}") from exc
        self.columns: list[str] = [r[0] for r in described]
        self.types: dict[str, str] = {r[0]: r[1] for r in described}  # DuckDB type names

    # ---------------------------------------------------------------- SQL

    def projected(self) -> str:
        mapping = self.settings.columns
        projection = ", ".join(f"{quote(s)} as {quote(d)}" for s, d in mapping.items()) if mapping else "*"
        return f"(select {projection} from {self.relation})"

    def use(self, shape: RecordShape) -> None:
        """The destination's record shape; checks the model has what it needs."""
        self.shape = shape
        s = self.settings
        needed = {"primary key": s.primary_key, **shape.required}
        for what, names in needed.items():
            missing = [n for n in names if n not in self.columns]
            if missing:
                raise SyncError(
                    f"sync {self.spec.name}: {what} column(s) {missing} not in model {self.spec.model} "
                    f"(columns: {', '.join(self.columns)})"
                )
        reserved = [c for c in self.columns if c.startswith(RESERVED_PREFIX)]
        if reserved:
            raise SyncError(
                f"sync {self.spec.name}: model columns {reserved} use the reserved prefix {RESERVED_PREFIX}"
            )
        identity = ", ".join(f"{expr} as {quote(name)}" for name, expr in shape.identity.items())
        self.con.execute(
            f"create or replace temp table {EMPTY_STATE} as select {identity}, null::bigint as fingerprint, "
            f"true as recorded from {self.projected()} limit 0"
        )

    def identity_types(self) -> dict[str, str]:
        """The identity columns and their DuckDB types (the state table's columns)."""
        rows = self.con.execute(f"describe {EMPTY_STATE}").fetchall()
        return {r[0]: r[1] for r in rows if r[0] not in ("fingerprint", "recorded")}

    def _shape(self) -> RecordShape:
        if self.shape is None:
            raise RuntimeError("Records.use(shape) first")
        return self.shape

    def _keys(self) -> list[str]:
        return self.settings.primary_key

    def clean(self) -> bool:
        """Whether no row has a NULL in its key or shares it (one aggregate, no window)."""
        if self._clean is None:
            keys = ", ".join(quote(k) for k in self._keys())
            any_null = " or ".join(f"{quote(k)} is null" for k in self._keys())
            row = self.con.execute(
                f"""select count(*) filter (where {any_null}), count(*) - count(distinct ({keys}))
                    from {self.projected()}"""
            ).fetchone()
            self._clean = bool(row) and row[0] == 0 and row[1] == 0
        return self._clean

    def _checked(self) -> str:
        """The projected rows with ``__rt_reason``: why a row is rejected, NULL when it is fine."""
        keys = self._keys()
        partition = ", ".join(quote(k) for k in keys)
        any_null = " or ".join(f"{quote(k)} is null" for k in keys)
        null_names = ", ".join(f"case when {quote(k)} is null then {literal(k)} end" for k in keys)
        return f"""
            with counted as (
                select *, count(*) over (partition by {partition}) as __rt_key_rows from {self.projected()}
            )
            select * exclude (__rt_key_rows),
                case
                    when {any_null} then 'NULL in key column(s): ' || concat_ws(', ', {null_names})
                    when __rt_key_rows > 1 then 'duplicate key: ' || __rt_key_rows || ' rows share it'
                end as {REASON}
            from counted"""

    def accepted(self) -> str:
        if self.clean():  # the common case: nothing to reject, no window over every row
            return self.projected()
        return f"(select * exclude ({REASON}) from ({self._checked()}) where {REASON} is null)"

    def rejected_sql(self) -> str:
        return f"""
            select
                {json_object(self._keys())} as {ROW_KEY},
                {REASON},
                {json_object(self.columns)} as {ROW}
            from ({self._checked()})
            where {REASON} is not null
            order by {ROW_KEY}"""

    # ---------------------------------------------------------------- state and classification

    def use_state(self, relation: str) -> None:
        """The state to classify against: identity columns, ``fingerprint`` (NULL: in doubt)
        and ``recorded`` (false: a killed run may have written it, the state never recorded it)."""
        self.state = relation

    @property
    def first_state(self) -> bool:
        """Whether the sync has no committed state yet (its first run, or the first since a reset)."""
        return self.state == EMPTY_STATE

    def state_count(self) -> int:
        """The records the state says the destination holds."""
        row = self.con.execute(f"select count(*) from {self.state} where recorded").fetchone()
        return int(row[0]) if row else 0

    def mark_lost(self, lost: str | None) -> int:
        """Drift: the state records the destination no longer holds (``lost``: a DuckDB query of
        their identity, or None) become HEALED in ``classify``. Returns how many are lost."""
        if lost is None:
            self.lost_relation = None
            return 0
        self.con.execute(f"create or replace temp table lost as {lost}")
        self.lost_relation = "temp.lost"
        row = self.con.execute(f"select count(*) from {self.lost_relation}").fetchone()
        return int(row[0]) if row else 0

    def _on(self, left: str, right: str) -> str:
        return " and ".join(f"{left}.{quote(c)} = {right}.{quote(c)}" for c in self._shape().identity)

    def classify(self) -> Plan:
        """One pass over the model: each accepted record NEW, CHANGED, UNCHANGED or HEALED."""
        shape = self._shape()
        records = shape.records.replace("{rows}", self.accepted())
        lost = f"left join {self.lost_relation} l on {self._on('l', 'r')}" if self.lost_relation else ""
        is_lost = f"l.{quote(next(iter(shape.identity)))} is not null" if self.lost_relation else "false"
        try:
            self.con.execute(
                f"""create or replace table {self.classified} as
                    select r.*, case when s.recorded is null or not s.recorded then {NEW}
                                     when {is_lost} then {HEALED}
                                     when s.fingerprint is distinct from r.{FINGERPRINT} then {CHANGED}
                                     else {UNCHANGED} end::tinyint as {CHANGE}
                    from ({records}) r
                    left join {self.state} s on {self._on("s", "r")}
                    {lost}"""
            )
        except Exception as exc:
            raise SyncError(f"sync {self.spec.name}: cannot read model {self.spec.model}: {exc}") from exc
        plan = Plan()
        names = {NEW: "new", CHANGED: "changed", UNCHANGED: "unchanged", HEALED: "healed"}
        for change, records_count, rows in self.con.execute(
            f"select {CHANGE}, count(*), sum({ROWS}) from {self.classified} group by 1"
        ).fetchall():
            setattr(plan, names[change], int(records_count))
            plan.rows += int(rows)
        return plan

    def _in(self, changes: tuple[int, ...]) -> str:
        return f"{CHANGE} in ({', '.join(str(c) for c in changes)})"

    @property
    def classified(self) -> str:
        return f"{self.shared}.classified"

    def on(self, con: Any) -> Records:
        """These records read through ``con``, a cursor of the run's connection: a destination
        streams its writes there while the connection runs the state's transaction. What the
        cursor reads (the model, the classified records) is visible to every cursor."""
        other = copy.copy(self)
        other.con = con
        return other

    def records(
        self, changes: tuple[int, ...] = EVERY, ordered: bool = True, rendered: bool = True
    ) -> Iterator[pa.RecordBatch]:
        """The records in ``changes``: what is written (``rendered``: the shape's ``written``
        over the model rows, with ``__rt_change``), or the classified records themselves
        (identity, ``__rt_fp``, ``__rt_rows``, ``__rt_change``). ``ordered``: by identity
        (samples, tests); writers do without the sort (Postgres orders the staged rows in its
        own statement)."""
        return self._stream(self.records_sql(changes, ordered, rendered))

    def records_sql(self, changes: tuple[int, ...] = EVERY, ordered: bool = False, rendered: bool = True) -> str:
        shape = self._shape()
        chosen = f"(select * from {self.classified} where {self._in(changes)})"
        if rendered and shape.written is not None:
            query = shape.written.replace("{rows}", self.accepted()).replace("{records}", chosen)
        else:
            query = f"select * from {chosen}"
        if not ordered:
            return query
        return f"select * from ({query}) order by {', '.join(quote(c) for c in self._order_columns(query))}"

    def _order_columns(self, query: str) -> list[str]:
        names = [r[0] for r in self.con.execute(f"describe {query}").fetchall()]
        identity = [c for c in self._shape().identity if c in names]
        return identity or [k for k in self._keys() if k in names] or names[:1]

    def identity_sql(self, changes: tuple[int, ...]) -> str:
        """The identity of the records in ``changes`` (the write-ahead marks)."""
        columns = ", ".join(quote(c) for c in self._shape().identity)
        return f"select {columns} from {self.classified} where {self._in(changes)}"

    def state_rows_sql(self, changes: tuple[int, ...]) -> str:
        """Identity and ``fingerprint`` of the records in ``changes``: what the state must now say."""
        columns = ", ".join(quote(c) for c in self._shape().identity)
        return f"select {columns}, {FINGERPRINT} as fingerprint from {self.classified} where {self._in(changes)}"

    def gone_sql(self) -> str:
        """The identity of the state records no row of the model has any more (a key rejected in
        this run still counts as present: what was written for it is left alone)."""
        shape = self._shape()  # (a Redis key template's fields are part of the primary key)
        present = " and ".join(f"{quote(c)} is not null" for c in self._keys())
        identity = ", ".join(f"{expr} as {quote(name)}" for name, expr in shape.identity.items())
        columns = ", ".join(f"s.{quote(c)}" for c in shape.identity)
        return f"""select {columns} from {self.state} s
                   anti join (select distinct {identity} from {self.projected()} where {present}) m
                   on {self._on("m", "s")}"""

    def gone_count(self) -> int:
        row = self.con.execute(f"select count(*) from ({self.gone_sql()})").fetchone()
        return int(row[0]) if row else 0

    def gone(self) -> Iterator[pa.RecordBatch]:
        """The identity of the gone records, in order."""
        order = ", ".join(quote(c) for c in self._shape().identity)
        return self._stream(f"select * from ({self.gone_sql()}) order by {order}")

    def arrow_schema(self) -> pa.Schema:
        """The projected model's columns as Arrow types (for a table the sync creates)."""
        return self.con.execute(f"select * from {self.projected()} limit 0").arrow().schema

    # ---------------------------------------------------------------- streams

    def _stream(self, query: str) -> Iterator[pa.RecordBatch]:
        try:
            reader = self.con.execute(query).to_arrow_reader(self.settings.batch_rows)
        except Exception as exc:
            raise SyncError(f"sync {self.spec.name}: cannot read model {self.spec.model}: {exc}") from exc
        for batch in reader:
            if batch.num_rows:
                yield batch

    def rejected(self) -> Iterator[pa.RecordBatch]:
        """Rows with a NULL or duplicated key: ``__rt_row_key``, ``__rt_reason``, ``__rt_row``
        (the row as JSON)."""
        if self.clean():
            return iter(())
        return self._stream(self.rejected_sql())


def payload_columns(batch: pa.RecordBatch | pa.Table | pa.Schema) -> list[str]:
    names = batch.names if isinstance(batch, pa.Schema) else batch.schema.names
    return [n for n in names if not n.startswith(RESERVED_PREFIX)]
