"""A sync's records, classified against its state in the run's own DuckDB.

The model is readable in a DuckDB connection of the run (``reverse_etl.sources`` attached or
copied it there). DuckDB does the per-row work in SQL generated from the sync's settings (never
from a model's logic): it renames columns, flags rows whose key is NULL or shared by several
rows (a window count, so duplicate detection never holds keys in Python memory), and gives each
record, in the shape its destination declares (``RecordShape``):

- ``__rt_key``: the record's identity in the sync state, as JSON text;
- ``__rt_fp``: a 64-bit fingerprint of exactly what is written, for change detection;
- ``__rt_rows``: how many model rows the record carries (Redis ``list`` values group rows);
- whatever else the destination writes from (Redis: the key and the JSON value).

The sync's state is read once per run into the run's scratch database, and one set-based pass
(``classify``) marks every record NEW, CHANGED, UNCHANGED or HEALED (the state says the
destination holds it, the destination lost it). Only what a destination needs then leaves
DuckDB, in Arrow record batches of ``batch_rows``. DuckDB's memory is capped and it spills to
the scratch folder, so memory is bounded by the batch size, not the table size.
"""

from __future__ import annotations

import contextlib
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

KEY, FINGERPRINT, ROWS = "__rt_key", "__rt_fp", "__rt_rows"
REASON, ROW, ROW_KEY = "__rt_reason", "__rt_row", "__rt_row_key"
KEY_ROWS, CHANGE = "__rt_key_rows", "__rt_change"
# what the state says of a record (the values of __rt_change)
UNCHANGED, NEW, CHANGED, HEALED = 0, 1, 2, 3
SENT = (NEW, CHANGED, HEALED)  # what an upsert writes


def json_object(columns: list[str]) -> str:
    return f"to_json(struct_pack({', '.join(f'{quote(c)} := {quote(c)}' for c in columns)}))::varchar"


def fingerprint(expression: str) -> str:
    """DuckDB's 64-bit ``hash`` as a signed BIGINT (Postgres has no unsigned type).

    Ten times cheaper than an md5 of the row as JSON, which dominated a re-sync. A collision
    (2^-64 per changed record) would miss one update; a DuckDB release that changed ``hash``
    would make every record look changed once (one full resend, no wrong data)."""
    return f"(hash({expression})::hugeint - 9223372036854775808)::bigint"


@dataclass(frozen=True)
class RecordShape:
    """How a destination identifies and renders its records, as DuckDB SQL over the model's
    projected, accepted rows (the destination module writes these; the engine runs them)."""

    state_key: str  # a row's identity in the state (JSON text); rows sharing it form one record
    records: str  # SELECT ... FROM {rows}: KEY, FINGERPRINT, ROWS and whatever the writer reads
    required: dict[str, list[str]] = field(default_factory=dict)  # what -> model columns it needs
    # the written rows are the model's columns, joined back by these key columns (Postgres: wide
    # rows are not copied into the classification); empty: the records carry what is written
    join_model_on: list[str] = field(default_factory=list)
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
    folder (state snapshot, classification, copies of remote models), memory capped, spilling
    to that folder; removed when the run ends. Use as a context manager."""

    def __init__(self, memory_limit: str) -> None:
        self.memory_limit = memory_limit
        self.con: Any = None
        self.folder: Path | None = None
        # a unique name: DuckDB shares one instance between the connections of a process
        self.db = f"rt_{uuid.uuid4().hex[:12]}"

    def __enter__(self) -> Scratch:
        from roundtrip.core.duckdb_extensions import connect

        self.folder = Path(tempfile.mkdtemp(prefix="reverse_etl-"))
        try:
            self.con = connect(":memory:")
            self.con.execute(f"set memory_limit = '{self.memory_limit}'")
            self.con.execute(f"set temp_directory = {literal(str(self.folder / 'spill'))}")
            self.con.execute("set preserve_insertion_order = false")  # nothing here depends on it
            self.con.execute(f"attach {literal(str(self.folder / 'run.duckdb'))} as {self.db} (read_write)")
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
        self.relation = relation
        self.where = describe
        self.shape: RecordShape | None = None
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

    def _checked(self) -> str:
        """The projected rows with ``__rt_reason``: why a row is rejected, NULL when it is fine."""
        keys = self.settings.primary_key
        partition = ", ".join(quote(k) for k in keys)
        any_null = " or ".join(f"{quote(k)} is null" for k in keys)
        null_names = ", ".join(f"case when {quote(k)} is null then {literal(k)} end" for k in keys)
        return f"""
            with counted as (
                select *, count(*) over (partition by {partition}) as {KEY_ROWS} from {self.projected()}
            )
            select * exclude ({KEY_ROWS}),
                case
                    when {any_null} then 'NULL in key column(s): ' || concat_ws(', ', {null_names})
                    when {KEY_ROWS} > 1 then 'duplicate key: ' || {KEY_ROWS} || ' rows share it'
                end as {REASON}
            from counted"""

    def accepted(self) -> str:
        return f"(select * exclude ({REASON}) from ({self._checked()}) where {REASON} is null)"

    def rejected_sql(self) -> str:
        return f"""
            select
                {json_object(self.settings.primary_key)} as {ROW_KEY},
                {REASON},
                {json_object(self.columns)} as {ROW}
            from ({self._checked()})
            where {REASON} is not null
            order by {ROW_KEY}"""

    def _shape(self) -> RecordShape:
        if self.shape is None:
            raise RuntimeError("Records.use(shape) first")
        return self.shape

    # ---------------------------------------------------------------- state and classification

    def _from_postgres(self, postgres_url: str, query: str, table: str) -> None:
        """Append the rows of ``query`` (run on Postgres) to a scratch table, with DuckDB's
        postgres scanner (binary COPY, no Python rows)."""
        self.con.execute("load postgres")
        alias = f"{self.db}_pg"
        self.con.execute(f"attach {literal(postgres_url)} as {alias} (type postgres, read_only)")
        try:
            self.con.execute(f"insert into {self.db}.{table} select * from postgres_query('{alias}', {literal(query)})")
        finally:
            self.con.execute(f"detach {alias}")

    def load_state(self, postgres_url: str | None, query: str | None) -> int:
        """Copy the sync's state (``row_key``, ``fingerprint`` (NULL: in doubt), ``recorded``
        (false: a killed run may have written it, the state never recorded it)) into the scratch
        database; ``query`` None: there is no state yet. Returns the number of state records."""
        self.con.execute(
            f"create or replace table {self.db}.state (row_key varchar, fingerprint bigint, recorded boolean)"
        )
        self.con.execute(f"create or replace table {self.db}.lost (row_key varchar)")
        if query is not None and postgres_url is not None:
            self._from_postgres(postgres_url, query, "state")
        return self.state_count()

    def state_count(self) -> int:
        """The records the state says the destination holds."""
        row = self.con.execute(f"select count(*) from {self.db}.state where recorded").fetchone()
        return int(row[0]) if row else 0

    def mark_lost(self, all_lost: bool = False, postgres_url: str | None = None, query: str | None = None) -> int:
        """Drift: the state records the destination no longer holds become HEALED in
        ``classify``: all of them (``all_lost``: the table is gone), or the ``row_key``s that
        ``query`` (run on the state's Postgres) finds. Returns how many are lost."""
        if all_lost:
            self.con.execute(f"insert into {self.db}.lost select row_key from {self.db}.state where recorded")
        elif query is not None and postgres_url is not None:
            self._from_postgres(postgres_url, query, "lost")
        row = self.con.execute(f"select count(*) from {self.db}.lost").fetchone()
        return int(row[0]) if row else 0

    def classify(self) -> Plan:
        """One pass over the model: each accepted record NEW, CHANGED, UNCHANGED or HEALED."""
        shape = self._shape()
        records = shape.records.replace("{rows}", self.accepted())
        try:
            self.con.execute(
                f"""create or replace table {self.db}.classified as
                    select r.*, case when s.row_key is null or not s.recorded then {NEW}
                                     when l.row_key is not null then {HEALED}
                                     when s.fingerprint is distinct from r.{FINGERPRINT} then {CHANGED}
                                     else {UNCHANGED} end::tinyint as {CHANGE}
                    from ({records}) r
                    left join {self.db}.state s on s.row_key = r.{KEY}
                    left join {self.db}.lost l on l.row_key = r.{KEY}"""
            )
        except Exception as exc:
            raise SyncError(f"sync {self.spec.name}: cannot read model {self.spec.model}: {exc}") from exc
        plan = Plan()
        names = {NEW: "new", CHANGED: "changed", UNCHANGED: "unchanged", HEALED: "healed"}
        for change, records_count, rows in self.con.execute(
            f"select {CHANGE}, count(*), sum({ROWS}) from {self.db}.classified group by 1"
        ).fetchall():
            setattr(plan, names[change], int(records_count))
            plan.rows += int(rows)
        return plan

    def _in(self, changes: tuple[int, ...]) -> str:
        return f"{CHANGE} in ({', '.join(str(c) for c in changes)})"

    def records(
        self, changes: tuple[int, ...] = (NEW, CHANGED, UNCHANGED, HEALED), ordered: bool = True
    ) -> Iterator[pa.RecordBatch]:
        """The records in ``changes`` with ``__rt_key``, ``__rt_fp``, ``__rt_rows`` and
        ``__rt_change``, plus what is written: the model's columns (a shape joined on keys) or
        the shape's own columns. ``ordered``: by key (samples, tests); writers do without the
        sort (Postgres orders the staged rows in its own statement)."""
        join_on = self._shape().join_model_on
        if not join_on:
            order = f" order by {KEY}" if ordered else ""
            query = f"select * from {self.db}.classified where {self._in(changes)}{order}"
        else:
            keys = [quote(k) for k in join_on]
            on = " and ".join(f"m.{k} = c.{k}" for k in keys)
            order = f" order by {', '.join(f'm.{k}' for k in keys)}" if ordered else ""
            query = f"""
                select m.*, c.{KEY}, c.{FINGERPRINT}, c.{ROWS}, c.{CHANGE}
                from {self.projected()} m join {self.db}.classified c on {on}
                where c.{self._in(changes)}{order}"""
        return self._stream(query)

    def keys(self, changes: tuple[int, ...]) -> Iterator[pa.RecordBatch]:
        """``row_key`` of the records in ``changes`` (the write-ahead marks)."""
        return self._stream(f"select {KEY} as row_key from {self.db}.classified where {self._in(changes)}")

    def state_rows(self, changes: tuple[int, ...]) -> Iterator[pa.RecordBatch]:
        """``row_key``, ``fingerprint`` of the records in ``changes``: what the state must now say."""
        return self._stream(f"select {KEY}, {FINGERPRINT} from {self.db}.classified where {self._in(changes)}")

    def _gone_sql(self, select: str) -> str:
        """State records whose key no row of the model has any more (a key rejected in this run
        still counts as present: what was written for it is left alone)."""
        shape = self._shape()  # (a Redis key template's fields are part of the primary key)
        present = " and ".join(f"{quote(c)} is not null" for c in self.settings.primary_key)
        return f"""select {select} from {self.db}.state s
                   anti join (select distinct {shape.state_key} as k from {self.projected()} where {present}) m
                   on m.k = s.row_key"""

    def gone_count(self) -> int:
        row = self.con.execute(self._gone_sql("count(*)")).fetchone()
        return int(row[0]) if row else 0

    def gone(self) -> Iterator[pa.RecordBatch]:
        """``row_key`` of the gone records, in key order."""
        return self._stream(self._gone_sql("s.row_key") + " order by s.row_key")

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
        return self._stream(self.rejected_sql())


def payload_columns(batch: pa.RecordBatch | pa.Table | pa.Schema) -> list[str]:
    names = batch.names if isinstance(batch, pa.Schema) else batch.schema.names
    return [n for n in names if not n.startswith(RESERVED_PREFIX)]
