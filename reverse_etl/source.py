"""Rows of a model, read from the DuckDB warehouse, classified against the sync state in DuckDB.

DuckDB does the per-row work in SQL generated from the sync's settings (never from a model's
logic): it renames columns, flags rows whose key is NULL or shared by several rows (a window
count, so duplicate detection never holds keys in Python memory), and gives each record

- ``__rt_key``: the record's identity in the sync state, as JSON text (the primary key values,
  or for Redis the key the record is written under);
- ``__rt_fp``: a 64-bit fingerprint of exactly what is written (DuckDB's ``hash`` of the
  written columns, or of the Redis value), for change detection;
- ``__rt_rows``: how many model rows the record carries (Redis ``list`` values group rows);
- Redis only: ``__rt_target`` (the rendered key) and ``__rt_value`` (the JSON value).

The sync's state (``reverse_etl.state``) is read once per run into a scratch DuckDB database
next to the run, and one set-based pass (``classify``) marks every record NEW, CHANGED or
UNCHANGED. Only what a destination needs then leaves DuckDB, in Arrow record batches of
``batch_rows``: unchanged Postgres rows never do. DuckDB's memory is capped and it spills to the
scratch folder, so memory is bounded by the batch size, not the table size.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Formatter
from typing import Any

import pyarrow as pa

from reverse_etl.errors import SyncError
from reverse_etl.spec import RESERVED_PREFIX, SyncSpec, key_template_fields
from roundtrip.core.sql import literal, quote

log = logging.getLogger(__name__)

KEY, FINGERPRINT, ROWS, TARGET, VALUE = "__rt_key", "__rt_fp", "__rt_rows", "__rt_target", "__rt_value"
REASON, ROW, ROW_KEY = "__rt_reason", "__rt_row", "__rt_row_key"
KEY_ROWS, CHANGE = "__rt_key_rows", "__rt_change"
# what the sync state says of a record (the values of __rt_change)
UNCHANGED, NEW, CHANGED = 0, 1, 2


def json_object(columns: list[str]) -> str:
    return f"to_json(struct_pack({', '.join(f'{quote(c)} := {quote(c)}' for c in columns)}))::varchar"


def fingerprint(expression: str) -> str:
    """DuckDB's 64-bit ``hash`` as a signed BIGINT (Postgres has no unsigned type).

    Ten times cheaper than an md5 of the row as JSON, which dominated a re-sync. A collision
    (2^-64 per changed record) would miss one update; a DuckDB release that changed ``hash``
    would make every record look changed once (one full resend, no wrong data)."""
    return f"(hash({expression})::hugeint - 9223372036854775808)::bigint"


def key_template_sql(template: str) -> str:
    """``reco:{user_id}`` as a DuckDB expression; NULL when a field is NULL."""
    parts = []
    for text, field_name, _, _ in Formatter().parse(template):
        if text:
            parts.append(literal(text))
        if field_name:
            parts.append(f"cast({quote(field_name)} as varchar)")
    return " || ".join(parts)


class ModelSource:
    """Reads one sync's model; use as a context manager."""

    def __init__(self, spec: SyncSpec) -> None:
        self.spec = spec
        self.settings = spec.settings
        self.con: Any = None
        self.scratch: Path | None = None
        # the run's own DuckDB database (state snapshot, classification); a unique name, as
        # DuckDB shares one instance between the connections of a process to the same file
        self.db = f"rt_{uuid.uuid4().hex[:12]}"
        self.columns: list[str] = []

    def __enter__(self) -> ModelSource:
        from roundtrip.core.duckdb_extensions import connect
        from roundtrip.core.settings import load_settings

        settings = load_settings()
        path = settings.duckdb_path
        if not path.exists():
            raise SyncError(f"warehouse {path} not found: run the loaders and `dbt build` first")
        # DuckDB's sorts and window counts spill to disk beyond this, so the process stays small
        limit = settings.reverse_etl_duckdb_memory
        self.con = connect(path, read_only=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="reverse_etl-"))
        try:
            self.con.execute(f"set memory_limit = '{limit}'")
            self.con.execute(f"set temp_directory = {literal(str(self.scratch / 'spill'))}")
            self.con.execute(f"attach {literal(str(self.scratch / 'run.duckdb'))} as {self.db} (read_write)")
            self.columns = [r[0] for r in self.con.execute(f"describe {self._projected()}").fetchall()]
        except Exception as exc:
            self.close()
            raise SyncError(
                f"sync {self.spec.name}: cannot read model {self.spec.model} ({self.spec.relation}): {exc}"
            ) from exc
        self._check_columns()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.con is not None:
            with contextlib.suppress(Exception):  # the instance may outlive this connection
                self.con.execute(f"detach database if exists {self.db}")
            self.con.close()
            self.con = None
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    # ---------------------------------------------------------------- SQL

    def _projected(self) -> str:
        mapping = self.settings.columns
        projection = ", ".join(f"{quote(s)} as {quote(d)}" for s, d in mapping.items()) if mapping else "*"
        return f"(select {projection} from {self.spec.relation})"

    def _check_columns(self) -> None:
        s = self.settings
        needed = {"primary key": s.primary_key, "order_by": s.order_by or []}
        if s.track_changes:
            needed["track_changes.column"] = [s.track_changes.column]
        if s.destination == "redis":
            needed["key template"] = key_template_fields(self.spec.target)
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
        if s.track_changes:
            clash = [c for c in (s.track_changes.previous, s.track_changes.changed_at) if c in self.columns]
            if clash:
                raise SyncError(f"sync {self.spec.name}: track_changes columns {clash} already come from the model")

    def _checked(self) -> str:
        """The projected rows with ``__rt_reason``: why a row is rejected, NULL when it is fine."""
        keys = self.settings.primary_key
        partition = ", ".join(quote(k) for k in keys)
        any_null = " or ".join(f"{quote(k)} is null" for k in keys)
        null_names = ", ".join(f"case when {quote(k)} is null then {literal(k)} end" for k in keys)
        return f"""
            with counted as (
                select *, count(*) over (partition by {partition}) as {KEY_ROWS} from {self._projected()}
            )
            select * exclude ({KEY_ROWS}),
                case
                    when {any_null} then 'NULL in key column(s): ' || concat_ws(', ', {null_names})
                    when {KEY_ROWS} > 1 then 'duplicate key: ' || {KEY_ROWS} || ' rows share it'
                end as {REASON}
            from counted"""

    def _state_key(self) -> str:
        if self.settings.destination == "redis":
            return f"to_json({key_template_sql(self.spec.target)})::varchar"
        return json_object(self.settings.primary_key)

    def _accepted(self) -> str:
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

    def _records_sql(self) -> str:
        """Every accepted record: Postgres: its key columns; Redis: its key and value."""
        s = self.settings
        if s.destination == "postgres":
            payload = ", ".join(f"{quote(c)} := {quote(c)}" for c in self.columns)
            keys = ", ".join(quote(k) for k in s.primary_key)
            return f"""
                select {keys}, {self._state_key()} as {KEY}, {fingerprint(f"struct_pack({payload})")} as {FINGERPRINT},
                    1 as {ROWS}
                from {self._accepted()}"""
        target = key_template_sql(self.spec.target)
        if s.value == "object":
            value, grouping, rows = json_object(self.columns), "", "1"
        else:
            in_key = set(key_template_fields(self.spec.target))
            members = [c for c in self.columns if c not in in_key]
            order = ", ".join(quote(c) for c in (s.order_by or [k for k in s.primary_key if k not in in_key]))
            member = f"struct_pack({', '.join(f'{quote(c)} := {quote(c)}' for c in members)})"
            value = f"to_json(list({member} order by {order or '1'}))::varchar"
            grouping, rows = " group by 1", "count(*)"
        return f"""
            select {TARGET}, to_json({TARGET})::varchar as {KEY}, {VALUE}, {fingerprint(VALUE)} as {FINGERPRINT}, {ROWS}
            from (select {target} as {TARGET}, {value} as {VALUE}, {rows} as {ROWS} from {self._accepted()}{grouping})"""

    # ---------------------------------------------------------------- state and classification

    def load_state(self, postgres_url: str | None, query: str | None) -> int:
        """Copy the sync's state (``row_key``, ``fingerprint``) from Postgres into the scratch
        database with DuckDB's postgres scanner (binary COPY, no Python rows); ``query`` None:
        there is no state yet. Returns the number of state records."""
        self.con.execute(f"create or replace table {self.db}.state (row_key varchar, fingerprint bigint)")
        if query is None or postgres_url is None:
            return 0
        self.con.execute("load postgres")
        self.con.execute(f"attach {literal(postgres_url)} as {self.db}_pg (type postgres, read_only)")
        try:
            self.con.execute(
                f"insert into {self.db}.state select * from postgres_query('{self.db}_pg', {literal(query)})"
            )
        finally:
            self.con.execute(f"detach {self.db}_pg")
        row = self.con.execute(f"select count(*) from {self.db}.state").fetchone()
        return int(row[0]) if row else 0

    def classify(self) -> Plan:
        """One pass over the model: each accepted record NEW, CHANGED or UNCHANGED against the state."""
        try:
            self.con.execute(
                f"""create or replace table {self.db}.classified as
                    select r.*, case when s.fingerprint is null then {NEW}
                                     when s.fingerprint <> r.{FINGERPRINT} then {CHANGED}
                                     else {UNCHANGED} end::tinyint as {CHANGE}
                    from ({self._records_sql()}) r left join {self.db}.state s on s.row_key = r.{KEY}"""
            )
        except Exception as exc:
            raise SyncError(f"sync {self.spec.name}: cannot read model {self.spec.model}: {exc}") from exc
        plan = Plan()
        for change, records, rows in self.con.execute(
            f"select {CHANGE}, count(*), sum({ROWS}) from {self.db}.classified group by 1"
        ).fetchall():
            setattr(plan, {NEW: "new", CHANGED: "changed", UNCHANGED: "unchanged"}[change], int(records))
            plan.rows += int(rows)
        return plan

    def _in(self, changes: tuple[int, ...]) -> str:
        return f"{CHANGE} in ({', '.join(str(c) for c in changes)})"

    def records(
        self, changes: tuple[int, ...] = (NEW, CHANGED, UNCHANGED), ordered: bool = True
    ) -> Iterator[pa.RecordBatch]:
        """The records in ``changes`` with ``__rt_key``, ``__rt_fp``, ``__rt_rows`` and
        ``__rt_change``: Postgres: the model's columns; Redis: ``__rt_target`` and ``__rt_value``.
        ``ordered``: by key (samples, tests); writers do without the sort (Postgres orders the
        staged rows in its own statement, which is what fixes the order row locks are taken in)."""
        if self.settings.destination == "redis":
            order = f" order by {TARGET}" if ordered else ""
            query = f"select * from {self.db}.classified where {self._in(changes)}{order}"
        else:
            keys = [quote(k) for k in self.settings.primary_key]
            on = " and ".join(f"m.{k} = c.{k}" for k in keys)
            order = f" order by {', '.join(f'm.{k}' for k in keys)}" if ordered else ""
            query = f"""
                select m.*, c.{KEY}, c.{FINGERPRINT}, c.{ROWS}, c.{CHANGE}
                from {self._projected()} m join {self.db}.classified c on {on}
                where c.{self._in(changes)}{order}"""
        return self._stream(query)

    def state_rows(self, changes: tuple[int, ...]) -> Iterator[pa.RecordBatch]:
        """``row_key``, ``fingerprint`` of the records in ``changes``: what the state must now say."""
        return self._stream(f"select {KEY}, {FINGERPRINT} from {self.db}.classified where {self._in(changes)}")

    def _gone_sql(self, select: str) -> str:
        """State records whose key no row of the model has any more (a key rejected in this run
        still counts as present: what was written for it is left alone)."""
        fields = key_template_fields(self.spec.target) if self.settings.destination == "redis" else []
        present = " and ".join(f"{quote(c)} is not null" for c in [*self.settings.primary_key, *fields])
        return f"""select {select} from {self.db}.state s
                   anti join (select distinct {self._state_key()} as k from {self._projected()} where {present}) m
                   on m.k = s.row_key"""

    def gone_count(self) -> int:
        row = self.con.execute(self._gone_sql("count(*)")).fetchone()
        return int(row[0]) if row else 0

    def gone(self) -> Iterator[pa.RecordBatch]:
        """``row_key`` of the gone records, in key order."""
        return self._stream(self._gone_sql("s.row_key") + " order by s.row_key")

    def arrow_schema(self) -> pa.Schema:
        """The projected model's columns as Arrow types (for a table the sync creates)."""
        return self.con.execute(f"select * from {self._projected()} limit 0").arrow().schema

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


@dataclass
class Plan:
    """What the classification found: records per kind, and the model rows they carry."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    rows: int = 0

    @property
    def sent(self) -> int:
        return self.new + self.changed


def payload_columns(batch: pa.RecordBatch | pa.Table | pa.Schema) -> list[str]:
    names = batch.names if isinstance(batch, pa.Schema) else batch.schema.names
    return [n for n in names if not n.startswith(RESERVED_PREFIX)]
