"""A sync's records, checked and classified against its state in the run's own DuckDB.

The model's rows are in the run's DuckDB (``reverse_etl.sources`` copied them there). DuckDB
does the per-row work in SQL generated from the sync's settings (never from a model's logic): it
renames columns, rejects rows with a reason (a NULL or shared key, two keys that render as one
destination identity, a value the destination cannot hold), and gives each record, in the shape
its destination declares (``RecordShape``):

- its identity: typed columns (a Postgres destination's primary key; a rendered Redis key), the
  columns the sync state keys its records by;
- ``__rt_fp``: a 64-bit fingerprint of exactly what is written, for change detection;
- ``__rt_rows``: how many model rows the record carries (Redis ``list`` values group rows);
- whatever else the destination writes from.

``classify`` joins the state (identity, fingerprint, recorded) in one set-based pass and marks
every record NEW, CHANGED, UNCHANGED or HEALED (the state vouches for it, the destination lost
it or holds it wrong). Only what a destination needs then leaves DuckDB, in Arrow record batches
of ``batch_rows``; DuckDB's memory is capped and it spills, so memory is bounded by the batch.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from reverse_etl.errors import SyncError, from_duckdb
from reverse_etl.spec import RESERVED_PREFIX, SyncSpec
from roundtrip.core.sql import duck_ident, literal

log = logging.getLogger(__name__)

FINGERPRINT, ROWS = "__rt_fp", "__rt_rows"
REASON, ROW, ROW_KEY = "__rt_reason", "__rt_row", "__rt_row_key"
CHANGE = "__rt_change"
# what the state says of a record (the values of __rt_change)
UNCHANGED, NEW, CHANGED, HEALED = 0, 1, 2, 3
SENT = (NEW, CHANGED, HEALED)  # what an upsert writes
EVERY = (NEW, CHANGED, UNCHANGED, HEALED)
KIND_NAMES = {NEW: "new", CHANGED: "changed", UNCHANGED: "unchanged", HEALED: "healed"}


def q(name: str) -> str:
    return duck_ident(name)


def json_object(columns: list[str]) -> str:
    return f"to_json(struct_pack({', '.join(f'{q(c)} := {q(c)}' for c in columns)}))::varchar"


def valid_json(expression: str) -> str:
    """DuckDB's JSON text with NaN and ±Infinity (which JSON cannot spell) as strings: the
    rejected row is kept as it was, as JSON that Postgres takes."""
    pattern, to = "'([:\\[,])(-?(?:NaN|Infinity))([,\\]}])'", "'\\1\"\\2\"\\3'"
    once = f"regexp_replace({expression}, {pattern}, {to}, 'g')"
    return f"regexp_replace({once}, {pattern}, {to}, 'g')"  # twice: matches share a comma


def fingerprint_of(expression: str) -> str:
    """DuckDB's 64-bit ``hash`` of an expression as a signed BIGINT (Postgres has no unsigned type).

    One hash over the values themselves, not over a rendering of them (JSON, text): ten times
    cheaper than an md5 of the row as JSON. A collision (2^-64 per changed record) would miss
    one update; a DuckDB release that changed ``hash`` would make every record look changed
    once (one full resend, no wrong data)."""
    return f"(hash({expression})::hugeint - 9223372036854775808)::bigint"


def fingerprint(columns: list[str], alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return fingerprint_of(", ".join(f"{prefix}{q(c)}" for c in columns))


@dataclass(frozen=True)
class ValueRule:
    """A value a destination cannot hold: rows where ``condition`` is true are rejected with
    ``reason`` (both DuckDB SQL over the projected row)."""

    condition: str
    reason: str


@dataclass(frozen=True)
class RecordShape:
    """How a destination identifies and renders its records, as DuckDB SQL over the model's
    projected, accepted rows (the destination module writes these; the engine runs them)."""

    # the record's identity: record column -> its SQL over one model row (rows sharing it form
    # one record); the state keys records by these columns
    identity: dict[str, str]
    # the model columns the identity is rendered from: rows whose values differ there but whose
    # identity is the same ("keys that render alike") are rejected
    identity_from: list[str]
    # rows -> SELECT the identity columns, FINGERPRINT, ROWS and the columns ``written`` joins on
    records: Callable[[str], str]
    # (rows, chosen records) -> SELECT what the destination writes of those records, with
    # CHANGE; None: the classified records themselves
    written: Callable[[str, str], str] | None = None
    required: dict[str, list[str]] = field(default_factory=dict)  # what -> model columns it needs
    rules: list[ValueRule] = field(default_factory=list)
    # what a dry run shows of a record that carries its own rendering: column -> label (JSON
    # text is shown parsed); empty: the model's columns
    shown: dict[str, str] = field(default_factory=dict)

    @property
    def identity_is_key(self) -> bool:
        return all(expr == q(name) for name, expr in self.identity.items())


@dataclass
class Plan:
    """What the classification found: records per kind, the model rows they carry, the rows
    rejected, and the records of the state the model no longer has."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    healed: int = 0
    rows: int = 0
    rejected: int = 0
    gone: int = 0

    @property
    def sent(self) -> int:
        return self.new + self.changed + self.healed

    @property
    def records(self) -> int:
        return self.new + self.changed + self.unchanged + self.healed


@dataclass(frozen=True)
class Model:
    """The model's rows, readable in the run's DuckDB: where, their columns and DuckDB types."""

    relation: str
    columns: list[str]
    types: dict[str, str]
    where: str  # for messages

    @classmethod
    def of(cls, con: Any, relation: str, mapping: dict[str, str] | None, renamed: str, where: str) -> Model:
        """The rows of ``relation`` with the sync's ``columns`` mapping applied (a view named
        ``renamed``: model column -> destination column)."""
        if mapping:
            present = [r[0] for r in con.execute(f"describe select * from {relation}").fetchall()]
            missing = [c for c in mapping if c not in present]
            if missing:
                raise SyncError(
                    f"{where}: column(s) {missing} of the sync's `columns` are not in the model "
                    f"(columns: {', '.join(present)})"
                )
            projection = ", ".join(f"{q(source)} as {q(name)}" for source, name in mapping.items())
            con.execute(f"create or replace view {renamed} as select {projection} from {relation}")
            relation = renamed
        described = con.execute(f"describe select * from {relation}").fetchall()
        return cls(relation, [r[0] for r in described], {r[0]: r[1] for r in described}, where)


class Records:
    """One sync's records in the run's DuckDB: checked, classified, streamed."""

    def __init__(self, con: Any, shared: str, spec: SyncSpec, model: Model, shape: RecordShape) -> None:
        self.con = con
        self.spec = spec
        self.settings = spec.settings
        self.model = model
        self.shape = shape
        self.shared = shared
        self.classified = self.table("classified")
        self._clean: bool | None = None  # no row to reject: no window pass
        self._check_columns()

    def table(self, name: str) -> str:
        """A work table of the run, seen by every cursor of its connection."""
        return duck_ident(self.shared, name)

    # ---------------------------------------------------------------- the model's rows

    @property
    def columns(self) -> list[str]:
        return self.model.columns

    @property
    def types(self) -> dict[str, str]:
        return self.model.types

    def projected(self) -> str:
        """The model with the sync's ``columns`` renaming applied (it is already in the copy)."""
        return f"(select * from {self.model.relation})"

    def _check_columns(self) -> None:
        s, shape = self.settings, self.shape
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

    def identity_types(self) -> dict[str, str]:
        """The identity columns and their DuckDB types (the state's key columns)."""
        identity = ", ".join(f"{expr} as {q(name)}" for name, expr in self.shape.identity.items())
        rows = self._sql(f"describe select {identity} from {self.projected()} limit 0").fetchall()
        return {r[0]: r[1] for r in rows}

    def _sql(self, sql: str) -> Any:
        try:
            return self.con.execute(sql)
        except Exception as exc:
            raise from_duckdb(exc, f"sync {self.spec.name}: model {self.spec.model} ({self.model.where})") from exc

    # ---------------------------------------------------------------- rejected rows

    def _keys(self) -> list[str]:
        return self.settings.primary_key

    def _collisions(self) -> str | None:
        """Identities rendered from more than one distinct ``identity_from`` tuple."""
        if self.shape.identity_is_key:
            return None
        identity = ", ".join(f"{expr} as {q(name)}" for name, expr in self.shape.identity.items())
        sources = ", ".join(q(c) for c in self.shape.identity_from)
        names = ", ".join(q(n) for n in self.shape.identity)
        return f"""select {names}, count(distinct ({sources})) as __rt_sources
                   from (select {identity}, {sources} from {self.projected()})
                   where {" and ".join(f"{q(n)} is not null" for n in self.shape.identity)}
                   group by all having count(distinct ({sources})) > 1"""

    def clean(self) -> bool:
        """Whether no row has to be rejected (one aggregate, no window): the common case."""
        if self._clean is None:
            keys = ", ".join(q(k) for k in self._keys())
            any_null = " or ".join(f"{q(k)} is null" for k in self._keys())
            rules = " or ".join(f"coalesce({r.condition}, false)" for r in self.shape.rules) or "false"
            row = self._sql(
                f"""select count(*) filter (where {any_null}), count(*) - count(distinct ({keys})),
                           count(*) filter (where {rules})
                    from {self.projected()}"""
            ).fetchone()
            clean = bool(row) and row[0] == 0 and row[1] == 0 and row[2] == 0
            collisions = self._collisions()
            if clean and collisions is not None:
                clean = not self._sql(f"select exists ({collisions})").fetchone()[0]
            self._clean = clean
        return self._clean

    def _checked(self) -> str:
        """The projected rows with ``__rt_reason``: why a row is rejected, NULL when it is fine."""
        keys = self._keys()
        partition = ", ".join(q(k) for k in keys)
        any_null = " or ".join(f"{q(k)} is null" for k in keys)
        null_names = ", ".join(f"case when {q(k)} is null then {literal(k)} end" for k in keys)
        reasons = [
            f"case when {any_null} then 'NULL in key column(s): ' || concat_ws(', ', {null_names}) end",
            "case when __rt_key_rows > 1 then 'duplicate key: ' || __rt_key_rows || ' rows share it' end",
        ]
        collisions = self._collisions()
        join = ""
        if collisions is not None:
            identity = ", ".join(f"{expr} as {q('__rt_id_' + name)}" for name, expr in self.shape.identity.items())
            on = " and ".join(f"c.{q('__rt_id_' + n)} = x.{q(n)}" for n in self.shape.identity)
            join = f"left join ({collisions}) x on {on}"
            shown = " || ' ' || ".join(f"c.{q('__rt_id_' + n)}::varchar" for n in self.shape.identity)
            reasons.append(
                "case when x.__rt_sources is not null then 'key renders alike: ' || "
                f"{shown} || ' is rendered by ' || x.__rt_sources || ' different keys' end"
            )
            counted = f"select *, {identity}, count(*) over (partition by {partition}) as __rt_key_rows from {self.projected()}"
        else:
            counted = f"select *, count(*) over (partition by {partition}) as __rt_key_rows from {self.projected()}"
        reasons += [f"case when coalesce({r.condition}, false) then {r.reason} end" for r in self.shape.rules]
        hidden = ["__rt_key_rows"] + ([f"__rt_id_{n}" for n in self.shape.identity] if collisions else [])
        return f"""
            with counted as ({counted})
            select c.* exclude ({", ".join(q(h) for h in hidden)}),
                   nullif(concat_ws('; ', {", ".join(reasons)}), '') as {REASON}
            from counted c {join}"""

    def accepted(self) -> str:
        if self.clean():
            return self.projected()
        return f"(select * exclude ({REASON}) from ({self._checked()}) where {REASON} is null)"

    def rejected_sql(self) -> str:
        return f"""
            select {valid_json(json_object(self._keys()))} as {ROW_KEY}, {REASON},
                   {valid_json(json_object(self.columns))} as {ROW}
            from ({self._checked()})
            where {REASON} is not null
            order by {ROW_KEY}"""

    def rejected(self) -> Iterator[pa.RecordBatch]:
        """Rows that are not written: ``__rt_row_key``, ``__rt_reason``, ``__rt_row`` (JSON)."""
        if self.clean():
            return iter(())
        return self.stream(self.rejected_sql())

    # ---------------------------------------------------------------- classification

    def records_of_model(self) -> str:
        """Every accepted record (identity, fingerprint, rows, join columns), unclassified."""
        return self.shape.records(self.accepted())

    def on(self, left: str, right: str) -> str:
        return " and ".join(f"{left}.{q(c)} = {right}.{q(c)}" for c in self.shape.identity)

    def classify(self, state: str, lost: str | None) -> Plan:
        """One pass over the model: each accepted record NEW, CHANGED, UNCHANGED or HEALED.

        ``state``: identity, ``fingerprint`` (NULL: unknown) and ``recorded`` (false: a killed
        run may have written it, the state never recorded it); ``lost``: identities the state
        vouches for that the destination does not hold as recorded."""
        lost_join = f"left join {lost} l on {self.on('l', 'r')}" if lost else ""
        is_lost = f"l.{q(next(iter(self.shape.identity)))} is not null" if lost else "false"
        self._sql(
            f"""create or replace table {self.classified} as
                select r.*, case when s.recorded is null or not s.recorded then {NEW}
                                 when {is_lost} then {HEALED}
                                 when s.fingerprint is distinct from r.{FINGERPRINT} then {CHANGED}
                                 else {UNCHANGED} end::tinyint as {CHANGE}
                from ({self.records_of_model()}) r
                left join {state} s on {self.on("s", "r")}
                {lost_join}"""
        )
        plan = Plan()
        for change, count, rows in self._sql(
            f"select {CHANGE}, count(*), sum({ROWS}) from {self.classified} group by 1"
        ).fetchall():
            setattr(plan, KIND_NAMES[change], int(count))
            plan.rows += int(rows)
        return plan

    def _in(self, changes: tuple[int, ...]) -> str:
        return f"{CHANGE} in ({', '.join(str(c) for c in changes)})"

    def on_cursor(self, con: Any) -> Records:
        """These records read through ``con``, another cursor of the run's connection: a
        destination streams its writes there while the connection runs the state's
        transaction (what the cursor reads, the copy and the classified records, every cursor
        sees)."""
        other = copy.copy(self)
        other.con = con
        return other

    def records(
        self, changes: tuple[int, ...] = EVERY, ordered: bool = True, rendered: bool = True
    ) -> Iterator[pa.RecordBatch]:
        """The records in ``changes``: what is written (``rendered``), or the classified records
        themselves (identity, ``__rt_fp``, ``__rt_rows``, ``__rt_change``). ``ordered``: by
        identity (samples, tests); writers do without the sort."""
        return self.stream(self.records_sql(changes, ordered, rendered))

    def records_sql(self, changes: tuple[int, ...] = EVERY, ordered: bool = False, rendered: bool = True) -> str:
        chosen = f"(select * from {self.classified} where {self._in(changes)})"
        if rendered and self.shape.written is not None:
            query = self.shape.written(self.accepted(), chosen)
        else:
            query = f"select * from {chosen}"
        if not ordered:
            return query
        names = [r[0] for r in self._sql(f"describe {query}").fetchall()]
        order = [c for c in self.shape.identity if c in names] or [k for k in self._keys() if k in names] or names[:1]
        return f"select * from ({query}) order by {', '.join(q(c) for c in order)}"

    def identity_sql(self, changes: tuple[int, ...]) -> str:
        """The identity of the records in ``changes`` (the write-ahead marks)."""
        return f"select {', '.join(q(c) for c in self.shape.identity)} from {self.classified} where {self._in(changes)}"

    def state_rows_sql(self, changes: tuple[int, ...]) -> str:
        """Identity and ``fingerprint`` of the records in ``changes``: what the state must now say."""
        columns = ", ".join(q(c) for c in self.shape.identity)
        return f"select {columns}, {FINGERPRINT} as fingerprint from {self.classified} where {self._in(changes)}"

    def gone_sql(self, state: str, extra: str | None = None) -> str:
        """The identity of the state's records no row of the model has any more (a key rejected
        in this run still counts as present: what was written for it is left alone), and of
        ``extra`` identities (found in the destination, once written by this sync) likewise."""
        shape = self.shape
        present = " and ".join(f"{q(c)} is not null" for c in self._keys())
        identity = ", ".join(f"{expr} as {q(name)}" for name, expr in shape.identity.items())
        ids = ", ".join(q(c) for c in shape.identity)
        owned = (
            f"select {ids} from {state}"  # (a doubt the state never recorded counts: a killed run may have written it)
        )
        if extra:
            owned = f"{owned} union select {ids} from {extra}"
        return f"""select s.* from ({owned}) s
                   anti join (select distinct {identity} from {self.projected()} where {present}) m
                   on {self.on("m", "s")}"""

    def count(self, sql: str) -> int:
        row = self._sql(f"select count(*) from ({sql})").fetchone()
        return int(row[0]) if row else 0

    def stream(self, query: str) -> Iterator[pa.RecordBatch]:
        reader = self._sql(query).to_arrow_reader(self.settings.batch_rows)
        for batch in reader:
            if batch.num_rows:
                yield batch

    def arrow_schema(self) -> pa.Schema:
        """The columns a destination writes, as Arrow types (for a table the sync creates)."""
        written = self.records_sql((NEW,), rendered=True)
        return self._sql(f"select * from ({written}) limit 0").arrow().schema


def payload_columns(batch: pa.RecordBatch | pa.Table | pa.Schema) -> list[str]:
    names = batch.names if isinstance(batch, pa.Schema) else batch.schema.names
    return [n for n in names if not n.startswith(RESERVED_PREFIX)]
