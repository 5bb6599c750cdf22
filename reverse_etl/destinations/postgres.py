"""Postgres destination: the changed records into a staging table, then one set-based statement.

Everything happens in the run's transaction on this Postgres (``reverse_etl.pg``: the run's
DuckDB attached to it); when it is the state's database (``transactional``), the state and the
run's record commit in the same transaction: a failed or killed run leaves the table as it was.
Only records that changed since the last run leave DuckDB, by binary COPY; a table the run
itself created (nobody else can see it yet) gets them straight, and its primary key afterwards.

- ``upsert`` / ``mirror``: ``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE`` the row really
  differs (``IS DISTINCT FROM``); ``RETURNING (xmax = 0)`` tells inserts from updates, so the
  counts are exact. ``mirror`` then deletes the rows this sync wrote before and the model no
  longer has (from the sync state: rows written by anyone else are never touched).
  ``track_changes`` keeps the previous value of a column and when it really changed.
  When more than ``rewrite_above_pct`` of the records changed and the table holds only what
  this sync wrote (see ``_rewrites``), the run empties it and writes every record instead, in
  key order (``TRUNCATE`` + binary COPY): an upsert of every row writes a new version of each
  row and index entry, three times the cost. The table keeps its OID, indexes, grants and
  dependent views; readers wait for the run's commit, as with ``replace``.
- ``insert_only``: ``ON CONFLICT (key) DO NOTHING`` on the destination's unique key, so even two
  concurrent runs (or two syncs feeding one queue) never insert a key twice.
- ``replace``: every row goes to a staging table; if anything changed, the transaction's end
  locks the table, ``TRUNCATE``s it and inserts the staged rows. The table keeps its OID, so
  the materialized views built on it stay valid; then the serving models are refreshed.

Drift: the run locks the table against other writers (``SHARE ROW EXCLUSIVE``: readers go on)
and compares a digest of what it holds (row count and the XOR of a hash of each row's written
columns, computed by Postgres in one scan) with the digest its last commit recorded. Equal:
nobody changed it. Different (rows deleted, inserted, edited by hand, the table restored or
retyped): the table is read back, and every record the state vouches for that is missing or
holds other values is written again (``healed``). ``verify_sample`` rows are read back on every
run too. ``insert_only`` never heals: a delivered row belongs to the app.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pyarrow as pa

from reverse_etl.counts import SyncCounts
from reverse_etl.destinations.base import Capabilities, Changes, Drift, Finished, Known, Verified, Written
from reverse_etl.destinations.pg_values import Column, rules_for, sent_as_text, written_expression
from reverse_etl.errors import DestinationError, SyncError, from_postgres_extension
from reverse_etl.pg import PgSession
from reverse_etl.records import (
    CHANGE,
    CHANGED,
    EVERY,
    FINGERPRINT,
    HEALED,
    NEW,
    ROWS,
    Model,
    Records,
    RecordShape,
    fingerprint,
    fingerprint_of,
    payload_columns,
    q,
)
from reverse_etl.spec import PG_NAME_BYTES, DestinationTests, SyncSpec, parse_relation
from roundtrip.core.sql import duck_ident, literal, pg_ident, postgres_type

log = logging.getLogger(__name__)
WORK_SCHEMA = "reverse_etl"  # the sync's work tables in the destination database
HEALED_FLAG = "__rt_healed"
DDL_LOCK = "hashtextextended('reverse_etl:ddl', 0)"
# types whose values Postgres can hash (hash_record_extended); others are hashed as text
HASHABLE = (
    "smallint",
    "integer",
    "bigint",
    "numeric",
    "real",
    "double precision",
    "boolean",
    "text",
    "character varying",
    "character",
    "date",
    "timestamp",
    "time",
    "uuid",
    "bytea",
    "jsonb",
    "interval",
)
PROBE_CHUNK = 1000  # identities per read-back query (a VALUES list)


def pg_type(arrow_type: pa.DataType) -> str:
    """Column type for a table the sync creates (an existing table keeps its own types)."""
    found = postgres_type(arrow_type)
    if found is None:
        raise SyncError(f"no Postgres type for Arrow type {arrow_type}: cast the column in the model")
    return found


class PostgresDestination:
    def __init__(
        self,
        spec: SyncSpec,
        pg: PgSession,
        transactional: bool,
        refresh: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        self.spec = spec
        self.settings = spec.settings
        self.pg = pg
        self.refresh = refresh
        self.capabilities = Capabilities(
            transactional=transactional,
            verifiable=True,
            keys="primary key",
            values="columns",
            modes=("upsert", "mirror", "insert_only", "replace"),
        )
        self.schema, self.table = spec.table
        self.relation = pg_ident(self.schema, self.table)  # in Postgres SQL
        self.remote = pg.table(self.schema, self.table) if pg is not None else ""  # in DuckDB SQL
        digest = hashlib.sha1(spec.name.encode()).hexdigest()[:16]
        self.stage_name, self.gone_name = f"stage_{digest}", f"gone_{digest}"
        self.stage = pg_ident(WORK_SCHEMA, self.stage_name)
        self.model: Model | None = None
        self.columns: list[str] | None = None  # the model columns written (set by write)
        self.existing: dict[str, str] = {}  # the table's columns and their types, before the run
        self.swap_due = False  # replace: something changed since the last run
        self.foreign = 0  # replace: rows the table holds that the sync did not write (swapped out)
        self.created = False  # the table did not exist before this run
        self.owns_all = False  # drift found the table exactly as the last commit left it, all of it the sync's
        self.owned = 0  # the records the state says the table holds
        self.rewritten = False  # this run emptied the table and wrote every record (see _rewrites)
        self.nulled: list[str] = []  # append_new_columns: removed columns set to NULL in our rows
        self.as_text: set[str] = set()  # columns staged as text (see pg_values.sent_as_text)
        # the digest drift took under the run's lock (columns, count, xor), and what the run's
        # own writes changed of it (rows added, xor); None: the digest is taken again by a scan
        self._base: tuple[list[str], int, int] | None = None
        self._delta: tuple[int, int] | None = None

    # ---------------------------------------------------------------- records

    def shape(self, model: Model) -> RecordShape:
        self.model = model
        keys, track, columns = self.settings.primary_key, self.settings.track_changes, model.columns
        if track:
            clash = [c for c in (track.previous, track.changed_at) if c in columns]
            if clash:
                raise SyncError(f"sync {self.spec.name}: track_changes columns {clash} already come from the model")
        too_long = [
            c
            for c in [*columns, *((track.previous, track.changed_at) if track else ())]
            if len(c.encode()) > PG_NAME_BYTES
        ]
        if too_long:
            raise SyncError(
                f"sync {self.spec.name}: column {too_long[0]!r} is {len(too_long[0].encode())} bytes; Postgres keeps "
                f"the first {PG_NAME_BYTES} of a name and drops the rest silently",
                hint="alias the column to a shorter name in the model, or map it with meta.sync.columns",
            )
        # (without a session, a destination only shapes records: the table's types are unknown)
        self.existing = self._table_columns() if self.pg is not None and self._exists() else {}
        rules = []
        for name in columns:
            rules += rules_for(self.spec.name, Column(name, model.types[name], self.existing.get(name)))
        on = " and ".join(f"m.{q(k)} = c.{q(k)}" for k in keys)
        key_list = ", ".join(q(k) for k in keys)
        written_columns = ", ".join(written_expression(c, model.types[c]) for c in columns)
        return RecordShape(
            identity={k: q(k) for k in keys},
            identity_from=list(keys),
            records=lambda rows: f"select {key_list}, {fingerprint(columns)} as {FINGERPRINT}, 1 as {ROWS} from {rows}",
            written=lambda rows, chosen: (
                f"""select {written_columns}, c.{FINGERPRINT}, c.{ROWS}, c.{CHANGE}
                                              from {rows} m join {chosen} c on {on}"""
            ),
            required={"track_changes.column": [track.column]} if track else {},
            rules=rules,
        )

    def _exists(self) -> bool:
        return self.pg.exists(self.schema, self.table)

    def _table_columns(self) -> dict[str, str]:
        rows = self.pg.query(
            f"""select attname::text, format_type(atttypid, atttypmod) from pg_attribute
                where attrelid = {literal(self.relation)}::regclass and attnum > 0 and not attisdropped
                order by attnum"""
        )
        return {r[0]: r[1] for r in rows}

    # ---------------------------------------------------------------- drift

    def drift(self, records: Records, known: Known, sample: int) -> Drift:
        self.owned, self.owns_all = known.owned, False  # (a second drift, reading every row, starts over)
        if self.settings.mode == "insert_only" or known.owned == 0:
            return Drift()
        if not self._exists():
            log.warning(
                "sync %s: %s is gone; writing its %d records again", self.spec.name, self.spec.target, known.owned
            )
            return Drift(
                lost=f"(select * exclude (fingerprint, recorded) from {known.state} where recorded)",
                reason="the table is gone",
            )
        columns = list(known.columns or [])
        now = self._digest(columns) if columns else None
        seen: dict[str, Any] = {"seen": now, "columns": columns}
        if now and now != "columns changed" and not self.pg.read_only:  # under the run's lock
            count, _, xor = now.partition(":")
            self._base, self._delta = (columns, int(count), int(xor)), (0, 0)
        if sample < 0:
            return replace(self._compare(records, known, None, "asked to compare every row"), **seen)
        if known.digest is None or now != known.digest:
            reason = "no digest recorded yet" if known.digest is None else "its contents changed since the last run"
            return replace(self._compare(records, known, None, reason), **seen)
        # the digest the last commit recorded, and as many rows as the state's records: the
        # table holds what the sync wrote and nothing else (the sample below may still say no)
        self.owns_all = self._base is not None and self._base[1] == known.owned
        if sample:
            drift = self._compare(records, known, sample, "the sample")
            if drift.lost is None and drift.extra is None:
                return Drift(checked=drift.checked, **seen)
            self.owns_all = False
            log.warning(
                "sync %s: %s differs from the state in the sampled rows: comparing every row",
                self.spec.name, self.spec.target,
            )  # fmt: skip
            return replace(self._compare(records, known, None, "the sample found rows that differ"), **seen)
        return Drift(**seen)

    def hold(self) -> None:
        """Lock the table against other writers (readers go on) until the commit: a change made
        while the run reads it would otherwise be taken into the digest it records, and never
        found. ``insert_only`` shares its table with the app and other syncs: no lock. In
        another database than the state's, the destination's own transaction opens here."""
        if not self.capabilities.transactional:
            self.pg.begin()
        if self.settings.mode == "insert_only" or not self._exists():
            return
        self.pg.execute(f"lock table {self.relation} in share row exclusive mode")

    def test(self, records: Records, tests: DestinationTests, expected: int) -> list[str]:
        """In the run's transaction, on what it is about to commit."""
        failures = []
        if tests.row_count is not None:
            held = int(self.pg.scalar(f"select count(*) from {self.relation}") or 0)
            share = 100.0 * abs(held - expected) / max(expected, 1)
            if share > tests.row_count["within_pct"]:
                failures.append(
                    f"row_count: {self.spec.target} holds {held:,} rows, the mart {expected:,} records "
                    f"({share:.1f} % apart, more than within_pct {tests.row_count['within_pct']:g})"
                )
        if tests.unique:
            cols = ", ".join(pg_ident(c) for c in tests.unique)
            dupes = int(self.pg.scalar(f"select count(*) - count(distinct ({cols})) from {self.relation}") or 0)
            if dupes:
                failures.append(f"unique({', '.join(tests.unique)}): {dupes:,} rows repeat a value")
        for column in tests.not_null or []:
            nulls = int(self.pg.scalar(f"select count(*) from {self.relation} where {pg_ident(column)} is null") or 0)
            if nulls:
                failures.append(f"not_null({column}): {nulls:,} rows have no value")
        return failures

    def commit(self) -> None:
        if not self.capabilities.transactional:  # (in the state's database, the state's commit is it)
            self.pg.commit()

    def rollback(self) -> None:
        if not self.capabilities.transactional:
            self.pg.rollback()

    def _compare(self, records: Records, known: Known, sample: int | None, reason: str) -> Drift:
        """Read the table back (every row, or ``sample`` random records of the state) and list
        the state's records it lacks or holds with other values."""
        con = records.con
        ids = list(records.shape.identity)
        id_list = ", ".join(q(c) for c in ids)
        candidates = records.table("rt_candidates")
        chosen = f"select * from {known.state} where recorded and fingerprint is not null"
        if sample is not None:
            chosen = f"select * from ({chosen}) using sample {int(sample)} rows"
        con.execute(f"create or replace table {candidates} as {chosen}")
        recorded = known.columns or dict(self.model.types if self.model else {})
        held = self._read_back(
            records, None if sample is None else f"select {id_list} from {candidates}", list(recorded)
        )
        fp = self._held_fingerprint(recorded)
        values = "false" if self.settings.fill_empty else "true"  # people write its values too: keys only
        on = " and ".join(f"h.{q(c)} = s.{q(c)}" for c in ids)
        lost = records.table("rt_drift_lost")
        con.execute(
            f"""create or replace table {lost} as
                select {", ".join(f"s.{q(c)}" for c in ids)} from {candidates} s left join {held} h on {on}
                where h.{q(ids[0])} is null or ({values} and {fp} is distinct from s.fingerprint)"""
        )
        checked = records.count(f"select * from {candidates}")
        n_lost = records.count(f"select * from {lost}")
        if self.settings.mode == "replace" and sample is None:
            # replace owns the whole table: a row it did not write (inserted by hand) goes too
            owned = f"(select * from {known.state} where recorded and fingerprint is not null)"
            self.foreign = records.count(f"select * from {held} h anti join {owned} s on {on}")
            if self.foreign:
                log.warning(
                    "sync %s: %s holds %d rows the sync did not write; the table is written whole again",
                    self.spec.name, self.spec.target, self.foreign,
                )  # fmt: skip
        extra = None
        if self.settings.mode == "mirror" and known.retired and sample is None:
            extra = records.table("rt_drift_extra")
            on_retired = " and ".join(f"h.{q(c)} = r.{q(c)}" for c in ids)
            con.execute(
                f"create or replace table {extra} as select {', '.join(f'r.{q(c)}' for c in ids)} "
                f"from {known.retired} r semi join {held} h on {on_retired}"
            )
            if not records.count(f"select * from {extra}"):
                extra = None
        if n_lost:
            log.warning(
                "sync %s: %s lacks or holds other values in %d of the %d records checked (%s); writing them again",
                self.spec.name, self.spec.target, n_lost, checked, reason,
            )  # fmt: skip
        return Drift(lost=lost if n_lost else None, extra=extra, checked=checked, reason=reason)

    @staticmethod
    def _held_fingerprint(recorded: dict[str, str]) -> str:
        """The fingerprint of a read-back row, cast to the types the model had when it was
        written: the state's fingerprint of the same values (the same function, in order)."""
        parts = [f"try_cast(h.{q(c)} as {kind})" for c, kind in recorded.items()]
        return fingerprint_of(", ".join(parts)) if parts else "null::bigint"

    def _read_back(self, records: Records, identities: str | None, columns: list[str]) -> str:
        """The table's rows (of ``identities``: a DuckDB query, else all) in a work table."""
        con = records.con
        keys = self.settings.primary_key
        present = self._table_columns()
        everything = list(dict.fromkeys([*keys, *columns]))
        selected = ", ".join(q(c) if c in present else f"null as {q(c)}" for c in everything)
        held = records.table("rt_held")
        if identities is None:
            self._work(records, f"create or replace table {held} as select {selected} from {self.remote}")
            return held
        self._work(records, f"create or replace table {held} as select {selected} from {self.remote} limit 0")
        rows = con.execute(identities).fetchall()
        key_list = ", ".join(pg_ident(k) for k in keys)
        pg_selected = ", ".join(pg_ident(c) if c in present else f"null as {pg_ident(c)}" for c in everything)
        for start in range(0, len(rows), PROBE_CHUNK):
            chunk = rows[start : start + PROBE_CHUNK]
            values = ", ".join(
                "(" + ", ".join(_pg_literal(v, present.get(k, "text")) for k, v in zip(keys, row, strict=True)) + ")"
                for row in chunk
            )
            sql = f"select {pg_selected} from {self.relation} where ({key_list}) in (values {values})"
            con.execute(f"insert into {held} select * from {self.pg.query_relation(sql)}")
        return held

    def _work(self, records: Records, sql: str) -> None:
        """DuckDB work that reads the table (read back into a work table), on the run's work
        cursor: outside the run's transaction, which writes to Postgres only. It reads in a
        session of its own; the run's lock keeps writers out, not readers."""
        try:
            records.con.execute(sql)
        except Exception as exc:
            raise from_postgres_extension(exc, f"sync {self.spec.name}: reading {self.spec.target}") from exc

    def digest(self, columns: list[str]) -> str | None:
        """Row count and XOR of each row's hash over the written ``columns`` (Postgres 14+).
        After a run that only inserted, updated and deleted rows of a table drift had digested
        (under the run's lock), the XOR is updated with the hashes of the rows touched, before
        and after, instead of a scan of the whole table."""
        base = self._base
        if base is not None and base[0] == columns and self._delta is not None and not self.created:
            count, xor = base[1] + self._delta[0], base[2] ^ self._delta[1]
            return f"{count}:{xor}"
        return self._digest(columns)

    def _row_hash(self, columns: list[str], alias: str = "") -> str | None:
        """The digest's hash of one row, over ``columns`` (None: Postgres older than 14, or a
        column of ours dropped by hand)."""
        if int(self.pg.scalar("select current_setting('server_version_num')::int") or 0) < 140000:
            return None  # no hash_record_extended, no bit_xor: drift falls back to reading back
        types = self._table_columns()
        track = self.settings.track_changes
        written = [*columns, *([track.previous, track.changed_at] if track else [])]
        if self.settings.fill_empty:  # people write its columns too: only its keys are the sync's to check
            written = list(self.settings.primary_key)
        if any(c not in types for c in written):
            return None
        prefix = f"{alias}." if alias else ""
        parts = [f"{prefix}{pg_ident(c)}" if _hashable(types[c]) else f"{prefix}{pg_ident(c)}::text" for c in written]
        return f"hash_record_extended(row({', '.join(parts)}), 0)"

    def _digest(self, columns: list[str]) -> str | None:
        if not self._exists():
            return None
        row_hash = self._row_hash(columns)
        if row_hash is None:
            return "columns changed"  # never the recorded digest: the next run reads the table back
        row = self.pg.query(f"select count(*), coalesce(bit_xor({row_hash}), 0) from {self.relation}")
        return f"{row[0][0]}:{row[0][1]}"

    def _xor_of(self, keys_table: str) -> int | None:
        """XOR of the digest's hashes of the table's rows whose keys are in ``keys_table``."""
        if self._base is None or self._delta is None:
            return None
        row_hash = self._row_hash(self._base[0], "t")
        if row_hash is None:
            self._delta = None
            return None
        on = " and ".join(f"t.{pg_ident(k)} = s.{pg_ident(k)}" for k in self.settings.primary_key)
        found = self.pg.scalar(
            f"select coalesce(bit_xor({row_hash}), 0) from {self.relation} t where exists "
            f"(select 1 from {keys_table} s where {on})"
        )
        return int(found or 0)

    def _touched(self, before: int | None, after: int | None, count: int) -> None:
        """The digest moves by the hashes of the rows touched (before and after) and the rows added."""
        if self._delta is None or before is None or after is None:
            self._delta = None
            return
        self._delta = (self._delta[0] + count, self._delta[1] ^ before ^ after)

    # ---------------------------------------------------------------- table

    def _prepare(self, changes: Changes) -> None:
        """Create the table if it does not exist; otherwise apply the schema change and check
        the table can take the rows. Then the run's staging table, typed like the table."""
        pg = self.pg
        model = changes.records.model
        schema = pg.con.execute(f"select * from {model.relation} limit 0").arrow().schema  # the model's own types
        columns = payload_columns(schema)
        self.as_text = {c for c in columns if sent_as_text(model.types[c])}
        track = self.settings.track_changes
        if not self._exists():
            pg.query(f"select pg_advisory_xact_lock({DDL_LOCK})")  # concurrent first runs: one creates
            self.created = not self._exists()  # (a run that waited here finds the other's table)
        if self.created:
            pg.execute(f"create schema if not exists {pg_ident(self.schema)}")
            types = {f.name: pg_type(f.type) for f in schema if f.name in columns}
            defs = [f"{pg_ident(c)} {types[c]}" for c in columns]
            if track:
                defs += [
                    f"{pg_ident(track.previous)} {types[track.column]}",
                    f"{pg_ident(track.changed_at)} timestamptz",
                ]
            # the primary key comes after the first COPY: one sorted index build is cheaper
            # than a million index insertions
            pg.execute(f"create table {self.relation} ({', '.join(defs)})")
            log.info("sync %s: created table %s", self.spec.name, self.spec.target)
            if self.settings.mode == "replace":
                self._add_primary_key()
        else:
            self._apply_schema_change(changes, schema)
            self._check_table(columns)
        self._stage_table(columns, fresh=self.created or bool(changes.schema_change))
        self.columns = columns

    def _stage_table(self, columns: list[str], fresh: bool) -> None:
        """The sync's staging table, typed like the destination, without its constraints or
        defaults; unlogged, kept from run to run (empty between them): creating it anew would
        cost a catalog reload on every run."""
        pg = self.pg
        wanted = [*columns, *([] if self.settings.mode == "replace" else [HEALED_FLAG])]
        if not fresh:
            present = pg.query(
                f"""select attname::text from pg_attribute where attrelid = to_regclass({literal(self.stage)})
                    and attnum > 0 and not attisdropped order by attnum"""
            )
            if [r[0] for r in present] == wanted:
                pg.execute(f"truncate {self.stage}")
                return
        cols = ", ".join(f"{pg_ident(c)}::text" if c in self.as_text else pg_ident(c) for c in columns)
        pg.execute(f"create schema if not exists {pg_ident(WORK_SCHEMA)}")
        pg.execute(f"drop table if exists {self.stage}")
        pg.execute(f"create unlogged table {self.stage} as select {cols} from {self.relation} limit 0")
        if self.settings.mode != "replace":
            pg.execute(f"alter table {self.stage} add column {pg_ident(HEALED_FLAG)} boolean not null default false")
        pg.refresh_catalog()

    def _apply_schema_change(self, changes: Changes, schema: pa.Schema) -> None:
        change, policy = changes.schema_change, self.settings.on_schema_change
        if not change:
            return
        pg = self.pg
        present = self._table_columns()
        for column in change.added:
            if column not in present:
                pg.execute(
                    f"alter table {self.relation} add column {pg_ident(column)} {pg_type(schema.field(column).type)}"
                )
        if policy == "sync_all_columns":
            for column in change.removed:
                if column in present:
                    pg.execute(f"alter table {self.relation} drop column {pg_ident(column)}")
            for column in change.retyped:
                kind = pg_type(schema.field(column).type)
                pg.execute(
                    f"alter table {self.relation} alter column {pg_ident(column)} type {kind} using {pg_ident(column)}::{kind}"
                )
        elif self.settings.mode != "insert_only":  # append_new_columns: no stale values in our rows
            self.nulled = [c for c in change.removed if c in present]
        log.info("sync %s: %s follows the model's columns (%s)", self.spec.name, self.spec.target, change.describe())

    def _guarded_sql(self) -> str:
        """SQL: whether the table has a trigger or a rule of someone's (they can refuse or
        rewrite the rows a statement sends)."""
        rel = f"{literal(self.relation)}::regclass"
        return f"""(exists (select 1 from pg_trigger where tgrelid = {rel} and not tgisinternal)
                    or exists (select 1 from pg_rewrite where ev_class = {rel} and rulename <> '_RETURN'))"""

    def _check_nothing_refused(self) -> None:
        """A trigger (``RETURN NULL``) or a rule (``DO INSTEAD NOTHING``) on the table can drop
        rows the statement sent without an error: the run would count them unchanged and the
        state vouch for them. Where the table has either, every staged row must be there now."""
        if self.settings.mode == "insert_only" or self.settings.match == "update_only":
            return  # rows already there (a consumed entry's key) or absent by policy are expected
        if not self.pg.scalar(f"select {self._guarded_sql()}"):
            return
        keys = self.settings.primary_key
        on = " and ".join(f"t.{pg_ident(k)} = s.{pg_ident(k)}" for k in keys)
        missing = self.pg.query(
            f"select {', '.join(f's.{pg_ident(k)}::text' for k in keys)} from {self.stage} s "
            f"where not exists (select 1 from {self.relation} t where {on}) "
            f"order by {', '.join(f's.{pg_ident(k)}' for k in keys)} limit 6"
        )
        if missing:
            shown = "; ".join(", ".join(str(v) for v in row) for row in missing[:5])
            raise SyncError(
                f"sync {self.spec.name}: {self.spec.target} did not keep rows the run wrote (keys {shown}"
                f"{' ...' if len(missing) > 5 else ''}): a trigger or a rule on the table refused them",
                hint="let the table take every row of the mart (or filter the mart); nothing was committed",
            )

    def _add_primary_key(self) -> None:
        keys = ", ".join(pg_ident(k) for k in self.settings.primary_key)
        self.pg.execute(f"alter table {self.relation} add primary key ({keys})")

    def _check_table(self, columns: list[str]) -> None:
        track = self.settings.track_changes
        needed = columns + ([track.previous, track.changed_at] if track else [])
        missing = [c for c in needed if c not in self._table_columns()]
        if missing:
            raise DestinationError(
                f"sync {self.spec.name}: {self.spec.target} has no column(s) {missing}",
                hint="add them, or set meta.sync.on_schema_change: append_new_columns",
            )
        if self.settings.mode == "replace":
            return
        keys = sorted(self.settings.primary_key)
        array = "array[" + ", ".join(literal(k) for k in keys) + "]::text[]"
        unique = self.pg.scalar(
            f"""select exists (
                   select 1 from pg_index i
                   where i.indrelid = {literal(self.relation)}::regclass and i.indisunique and i.indpred is null
                     and i.indnkeyatts = {len(keys)}
                     and (select array_agg(a.attname::text order by a.attname)
                          from pg_attribute a where a.attrelid = i.indrelid and a.attnum = any(i.indkey[:i.indnkeyatts]))
                         = {array})"""
        )
        if not unique:
            raise DestinationError(
                f"sync {self.spec.name}: {self.spec.target} needs a unique index on ({', '.join(keys)}) "
                f"for mode {self.settings.mode}",
                hint=f"create unique index on {self.spec.target} ({', '.join(keys)})",
            )

    # ---------------------------------------------------------------- writing

    def write(self, changes: Changes) -> Written:
        plan, mode = changes.plan, self.settings.mode
        if plan.records == 0:
            return Written(SyncCounts())  # an empty model creates nothing (replace: see finish)
        self._prepare(changes)
        if mode == "replace":
            return Written(self._stage_for_replace(changes))
        kinds = (NEW,) if mode == "insert_only" else (NEW, CHANGED, HEALED)
        to_send = plan.new if mode == "insert_only" else plan.sent
        counts = SyncCounts(unchanged=plan.records - to_send)
        if not to_send:
            self._empty_stage()
            return Written(counts)
        if self._rewrites(changes):
            return Written(self._rewrite(changes))
        written = changes.written(kinds)
        cols = ", ".join(q(c) for c in self.columns or [])
        pg = self.pg
        if self.created and not self.as_text and self.settings.match != "update_only":
            # only this transaction sees the table: no conflicts to resolve
            track = self.settings.track_changes
            extra = ""
            if track:
                now = pg.scalar("select now()::text")  # the transaction's time, as Postgres says it
                cols += f", {q(track.previous)}, {q(track.changed_at)}"
                extra = f", null, {literal(str(now))}::timestamptz"
            selected = ", ".join(q(c) for c in self.columns or [])
            # in key order: later upserts probe the key in order, so they walk the table's pages
            # in order too instead of at random (2-3x faster once it outgrows shared_buffers)
            order = ", ".join(q(k) for k in self.settings.primary_key)
            pg.duck(f"insert into {self.remote} ({cols}) select {selected}{extra} from ({written}) order by {order}")
            changes.handed(to_send)
            counts.inserted = plan.new
            counts.healed = to_send - plan.new  # the table was dropped: every record it had is back
            self._add_primary_key()
            self._empty_stage()
            return Written(counts)
        if self.created:  # a new table whose rows go through the staging table: its key first
            self._add_primary_key()
        healed = f"{CHANGE} = {HEALED}"
        pg.duck(
            f"insert into {pg.table(WORK_SCHEMA, self.stage_name)} ({cols}, {q(HEALED_FLAG)}) "
            f"select {cols}, {healed} from ({written})"
        )
        changes.handed(to_send)
        pg.execute(f"analyze {self.stage}")
        kept_out, counts.skipped = self._kept_out(changes.records)
        before = self._xor_of(self.stage)
        counts.inserted, counts.updated = self._apply(healed=False)
        healed_inserts, healed_updates = self._apply(healed=True) if plan.healed else (0, 0)
        counts.healed = healed_inserts + healed_updates
        self._touched(before, self._xor_of(self.stage), counts.inserted + healed_inserts)
        if self.nulled or changes.schema_change:
            self._delta = None  # columns changed: the digest is taken again
        self._null_removed_columns()
        self._check_nothing_refused()
        sent = counts.inserted + counts.updated + counts.healed + counts.skipped
        counts.unchanged += to_send - sent  # sent, but already so
        self._empty_stage()
        if self.settings.match == "update_only":
            return Written(counts, absent=kept_out)
        return Written(counts, kept=kept_out)

    def _rewrites(self, changes: Changes) -> bool:
        """Whether emptying the table and writing every record leaves it exactly as the upsert
        (and mirror's deletes) would: more than ``rewrite_above_pct`` of the records changed; the
        table is as the last commit left it and holds only the sync's records (no hand edits, no
        rows of others); every record the state has is in this run's records or deleted by it
        (not a cursor run, nothing rejected); the run's role may TRUNCATE it (an app's table
        the sync is granted INSERT and UPDATE on, say, is upserted); no column but the sync's (people's fields would be
        lost); nothing on the table that an upsert and a TRUNCATE tell apart (triggers, rules,
        foreign keys that point at it, child tables, row-level security, a publication: its subscribers would see
        a TRUNCATE and inserts, not updates); and no other session holding it (its
        ``ACCESS EXCLUSIVE`` lock would wait for an open transaction that read the table)."""
        plan, settings = changes.plan, self.settings
        if settings.mode not in ("upsert", "mirror") or self.created or not self.owns_all or not plan.records:
            return False
        if 100.0 * plan.sent <= settings.rewrite_above_pct * plan.records:
            return False
        if settings.change_detection != "diff" or plan.rejected or plan.healed:
            return False
        if settings.match != "both" or settings.fill_empty or settings.track_changes or self.as_text or self.nulled:
            return False
        if plan.records - plan.new + plan.gone != self.owned:  # a record of the state the run does not write
            return False
        if set(self._table_columns()) != set(self.columns or []):
            return False
        rel = f"{literal(self.relation)}::regclass"
        return not self.pg.scalar(
            f"""select not has_table_privilege({rel}, 'TRUNCATE')
                    or {self._guarded_sql()}
                    or exists (select 1 from pg_constraint where confrelid = {rel} and contype = 'f')
                    or exists (select 1 from pg_inherits where inhparent = {rel})
                    or exists (select 1 from pg_class where oid = {rel} and (relkind <> 'r' or relrowsecurity))
                    or exists (select 1 from pg_publication_rel where prrelid = {rel})
                    or exists (select 1 from pg_publication where puballtables)
                    or exists (select 1 from pg_locks l where relation = {rel} and pid <> pg_backend_pid()
                               and not exists (select 1 from pg_stat_activity a where a.pid = l.pid
                                               and a.backend_type = 'autovacuum worker'))"""
        )  # (a session holding the table, an app's open transaction: TRUNCATE would wait for its
        # end; autovacuum gives way by itself)

    def _rewrite(self, changes: Changes) -> SyncCounts:
        """Every record into the emptied table, in key order (the index grows at its right
        edge); the counts are the classification's (the state was just found true)."""
        plan, pg = changes.plan, self.pg
        cols = ", ".join(q(c) for c in self.columns or [])
        order = ", ".join(q(k) for k in self.settings.primary_key)
        log.info(
            "sync %s: %d of %d records changed: writing %s whole (TRUNCATE + COPY) instead of an upsert",
            self.spec.name, plan.sent, plan.records, self.spec.target,
        )  # fmt: skip
        pg.execute(f"truncate only {self.relation}")
        pg.duck(f"insert into {self.remote} ({cols}) select {cols} from ({changes.written(EVERY)}) order by {order}")
        changes.handed(plan.records)
        # one scan: every row there (nothing refused it), and the digest the run records
        columns = list(self.model.columns if self.model else self.columns or [])
        row_hash = self._row_hash(columns)
        found = pg.query(
            f"select count(*), {f'coalesce(bit_xor({row_hash}), 0)' if row_hash else '0'} from {self.relation}"
        )
        held = int(found[0][0])
        if held != plan.records:
            raise SyncError(
                f"sync {self.spec.name}: {self.spec.target} holds {held:,} rows after the run wrote "
                f"{plan.records:,}; nothing was committed"
            )
        self.rewritten = True
        if row_hash is None:
            self._delta = None  # the digest is taken again (a column it needs is missing)
        else:
            self._base, self._delta = (columns, held, int(found[0][1])), (0, 0)
        self._empty_stage()
        return SyncCounts(inserted=plan.new, updated=plan.changed, unchanged=plan.unchanged)

    def _kept_out(self, records: Records) -> tuple[str | None, int]:
        """The staged records a write policy keeps out (``create_only``: a row with their key is
        there already; ``update_only``: none is), read before the statement runs (the run's
        lock keeps other writers out meanwhile), into a work table; and how many."""
        match = self.settings.match
        if match == "both" or self.settings.mode == "insert_only":
            return None, 0
        keys = self.settings.primary_key
        on = " and ".join(f"t.{pg_ident(k)} = s.{pg_ident(k)}" for k in keys)
        exists = "exists" if match == "create_only" else "not exists"
        sql = (
            f"select {', '.join(f's.{pg_ident(k)}' for k in keys)} from {self.stage} s "
            f"where {exists} (select 1 from {self.relation} t where {on})"
        )
        if self.capabilities.transactional:
            # the state reads it in the same transaction, on the same connection: a temp table
            # (the transaction writes to Postgres; DuckDB lets it write its temp tables too)
            self.pg.duck(f"create or replace temp table rt_kept_out as select * from {self.pg.query_relation(sql)}")
            table = "temp.rt_kept_out"
            count = int(self.pg.duck(f"select count(*) from {table}").fetchone()[0])
            return table, count
        kept = self.pg.duck(f"select * from {self.pg.query_relation(sql)}").to_arrow_table()  # sees the run's staging
        table = records.table("rt_kept_out")
        records.con.register("rt_kept", kept)
        try:
            records.con.execute(f"create or replace table {table} as select * from rt_kept")
        finally:
            records.con.unregister("rt_kept")
        return table, kept.num_rows

    def _from_stage(self) -> str:
        """The staged columns as the table takes them (those sent as text cast back)."""
        types = self._table_columns() if self.as_text else {}
        return ", ".join(f"{pg_ident(c)}::{types[c]}" if c in self.as_text else pg_ident(c) for c in self.columns or [])

    def _counted(self, statement: str) -> tuple[int, int]:
        """Run a data-modifying ``statement`` whose ``returning`` gives one boolean per row
        (``is_insert``); returns (true, false) counts. (``postgres_query`` only reads: the
        counts go through a temporary table.)"""
        pg = self.pg
        pg.execute("create temp table if not exists _rt_counts (a bigint, b bigint)")
        pg.execute("truncate _rt_counts")
        pg.execute(
            f"with done as ({statement}) insert into _rt_counts "
            "select count(*) filter (where is_insert), count(*) filter (where not is_insert) from done"
        )
        row = pg.query("select a, b from _rt_counts")
        return (int(row[0][0]), int(row[0][1])) if row else (0, 0)

    def _apply(self, healed: bool) -> tuple[int, int]:
        """One set-based statement from the staging table into the table: (inserted, updated).
        The write policies: ``create_only`` never updates (``ON CONFLICT DO NOTHING``),
        ``update_only`` never inserts (an ``UPDATE ... FROM`` the staged rows), ``fill_empty``
        only fills the columns it names where the destination's value is NULL."""
        keys = self.settings.primary_key
        cols = ", ".join(pg_ident(c) for c in self.columns or [])
        conflict = ", ".join(pg_ident(k) for k in keys)
        order = conflict  # same lock order in concurrent runs: no deadlocks
        which = f"{'' if healed else 'not '}{pg_ident(HEALED_FLAG)}"
        match = self.settings.match
        if self.settings.mode == "insert_only" or match == "create_only":
            return self._counted(
                f"""insert into {self.relation} ({cols}) select {self._from_stage()} from {self.stage} where {which} order by {order}
                    on conflict ({conflict}) do nothing
                    returning true as is_insert"""
            )
        others = [c for c in self.columns or [] if c not in keys]
        new = "s" if match == "update_only" else "excluded"
        sets, differs = self._sets(others, new)
        insert_cols, select_cols = cols, self._from_stage()
        track = self.settings.track_changes
        if track:
            insert_cols += f", {pg_ident(track.previous)}, {pg_ident(track.changed_at)}"
            select_cols += ", null, now()"
        if match == "update_only":
            on = " and ".join(f"t.{pg_ident(k)} = s.{pg_ident(k)}" for k in keys)
            staged = f"(select {self._from_stage()}, {pg_ident(HEALED_FLAG)} from {self.stage})"
            if not others:  # nothing to update: rows there stay as they are
                return 0, 0
            return self._counted(
                f"""update {self.relation} t set {", ".join(sets)} from {staged} s
                    where {on} and {"" if healed else "not "}s.{pg_ident(HEALED_FLAG)} and {differs}
                    returning false as is_insert"""
            )
        action = f"do update set {', '.join(sets)} where {differs}" if others else "do nothing"
        return self._counted(
            f"""insert into {self.relation} as t ({insert_cols})
                select {select_cols} from {self.stage} where {which} order by {order}
                on conflict ({conflict}) {action}
                returning (xmax = 0) as is_insert"""
        )

    def _sets(self, others: list[str], new: str) -> tuple[list[str], str]:
        """The SET list of an update from ``new`` (``excluded``, or the staged row), and the
        condition that the row really changes (NULL-safe)."""
        fill = self.settings.fill_empty
        filled = set(others) if fill is True else set(fill or [])
        value = {
            c: f"coalesce(t.{pg_ident(c)}, {new}.{pg_ident(c)})" if c in filled else f"{new}.{pg_ident(c)}"
            for c in others
        }
        sets = [f"{pg_ident(c)} = {value[c]}" for c in others]
        track = self.settings.track_changes
        if track:
            col, prev, at = pg_ident(track.column), pg_ident(track.previous), pg_ident(track.changed_at)
            moved = f"t.{col} is distinct from {value[track.column]}"
            sets += [
                f"{prev} = case when {moved} then t.{col} else t.{prev} end",
                f"{at} = case when {moved} then now() else t.{at} end",
            ]
        differs = f"({', '.join(f't.{pg_ident(c)}' for c in others)}) is distinct from ({', '.join(value[c] for c in others)})"
        return sets, differs

    def _null_removed_columns(self) -> None:
        """append_new_columns: a column the model lost holds NULL, not a stale value, in every
        row this sync wrote (every record was re-sent: its fingerprint changed with the columns)."""
        if not self.nulled:
            return
        match = " and ".join(f"t.{pg_ident(k)} = s.{pg_ident(k)}" for k in self.settings.primary_key)
        sets = ", ".join(f"{pg_ident(c)} = null" for c in self.nulled)
        self.pg.execute(f"update {self.relation} t set {sets} from {self.stage} s where {match}")

    def _stage_for_replace(self, changes: Changes) -> SyncCounts:
        """Every record to the staging table, when a swap will follow (something changed)."""
        plan = changes.plan
        self.swap_due = bool(plan.sent or plan.gone or self.created or changes.schema_change or self.foreign)
        if self.swap_due:
            cols = ", ".join(q(c) for c in self.columns or [])
            self.pg.duck(
                f"insert into {self.pg.table(WORK_SCHEMA, self.stage_name)} ({cols}) "
                f"select {cols} from ({changes.written(EVERY)})"
            )
            changes.handed(plan.records)
        return SyncCounts(inserted=plan.new, updated=plan.changed, unchanged=plan.unchanged, healed=plan.healed)

    def _empty_stage(self) -> None:
        """Empty the staging table (it stays for the next run)."""
        self.pg.execute(f"truncate {self.stage}")

    # ---------------------------------------------------------------- end of run

    def finish(self, records: Records, gone: str | None, owed_refresh: list[str]) -> Finished:
        mode = self.settings.mode
        if mode == "mirror":
            if self.rewritten:  # the records the model lost were not written again
                return Finished(SyncCounts(deleted=records.count(gone) if gone else 0))
            return Finished(SyncCounts(deleted=self._delete(gone)))
        if mode != "replace":
            return Finished(SyncCounts())
        deleted = self.foreign  # the rows it did not write, swapped out with the rest
        if gone:
            deleted += records.count(gone)
        pending = list(owed_refresh)
        if self.columns is None:  # the model is empty: replace with nothing
            if not self._exists():
                raise SyncError(
                    f"sync {self.spec.name}: model {self.spec.model} is empty and {self.spec.target} does not exist"
                )
            self.columns = []
        if self.swap_due or deleted or self.created:
            self._swap()
            pending = sorted(set(pending) | {m.name for m in self.spec.refresh})
        gone_views = [
            m.name for m in self.spec.refresh if m.relation and not self.pg.exists(*parse_relation(m.relation))
        ]
        if gone_views:  # a serving view dropped by hand: built again (by dbt) though the mart is the same
            log.warning(
                "sync %s: serving model(s) %s missing: building them again", self.spec.name, ", ".join(gone_views)
            )
            pending = sorted(set(pending) | set(gone_views))
        if self.columns:
            self._empty_stage()
        return Finished(SyncCounts(deleted=deleted), refresh_due=pending)

    def _swap(self) -> None:
        """TRUNCATE + INSERT in the run's transaction: the table keeps its OID, indexes, grants
        and dependent materialized views; the exclusive lock is held only for this step."""
        pg = self.pg
        self._delta = None  # every row replaced: the digest is taken again
        pg.execute(f"lock table {self.relation} in access exclusive mode")
        pg.execute(f"truncate {self.relation}")
        if self.columns:
            cols = ", ".join(pg_ident(c) for c in self.columns)
            pg.execute(f"insert into {self.relation} ({cols}) select {self._from_stage()} from {self.stage}")
        log.info("sync %s: replaced the rows of %s", self.spec.name, self.spec.target)

    def _delete(self, gone: str | None) -> int:
        """Delete the rows of ``gone`` (identities this sync wrote and the model no longer has).
        Returns the rows really deleted."""
        if gone is None or not self._exists():
            return 0
        pg = self.pg
        keys = self.settings.primary_key
        table = pg_ident(WORK_SCHEMA, self.gone_name)
        if pg.scalar(f"select to_regclass({literal(table)}) is null"):  # kept from run to run, empty
            pg.execute(f"create schema if not exists {pg_ident(WORK_SCHEMA)}")
            keys_sql = ", ".join(pg_ident(k) for k in keys)
            pg.execute(f"create unlogged table {table} as select {keys_sql} from {self.relation} limit 0")
            pg.refresh_catalog()
        pg.duck(
            f"insert into {pg.table(WORK_SCHEMA, self.gone_name)} select {', '.join(q(k) for k in keys)} from ({gone})"
        )
        match = " and ".join(f"t.{pg_ident(k)} = g.{pg_ident(k)}" for k in keys)
        removed = self._xor_of(table)
        deleted, _ = self._counted(
            f"delete from {self.relation} t using {table} g where {match} returning true as is_insert"
        )
        self._touched(removed, 0, -deleted)
        pg.execute(f"truncate {table}")
        return deleted

    # ---------------------------------------------------------------- verify

    def verify(self, records: Records, identities: str | None) -> Verified:
        """The model's records (of ``identities``, else all) read back and compared column by
        column with what the model holds now."""
        con = records.con
        model = self.model
        if model is None:
            raise RuntimeError("shape() first")
        keys = self.settings.primary_key
        columns = [c for c in model.columns]
        expected = (
            f"select * from {records.accepted()}"
            if identities is None
            else (
                f"select m.* from {records.accepted()} m semi join ({identities}) i on "
                + " and ".join(f"m.{q(k)} = i.{q(k)}" for k in keys)
            )
        )
        if not self._exists():
            held = records.table("rt_held")
            con.execute(f"create or replace table {held} as select * from ({expected}) limit 0")
        else:
            key_list = ", ".join(q(k) for k in keys)
            held = self._read_back(
                records, None if identities is None else f"select {key_list} from ({expected})", columns
            )
        types = model.types
        fill = self.settings.fill_empty
        filled = set(columns) if fill is True else set(fill or [])

        def differs_in(c: str) -> str:
            if c in filled:  # fill_empty: a value a person typed is right; only an empty one differs
                return f"case when h.{q(c)} is null and m.{q(c)} is not null then {literal(c)} end"
            return f"case when try_cast(h.{q(c)} as {types[c]}) is distinct from m.{q(c)} then {literal(c)} end"

        differs = [differs_in(c) for c in columns if c not in keys]
        on = " and ".join(f"h.{q(k)} = m.{q(k)}" for k in keys)
        table = records.table("rt_verified")
        con.execute(
            f"""create or replace table {table} as
                select {", ".join(f"m.{q(k)}" for k in keys)},
                       case when h.{q(keys[0])} is null then 'missing' else 'differs' end as __rt_problem,
                       case when h.{q(keys[0])} is null then []::varchar[]
                            else list_filter([{", ".join(differs) or "null::varchar"}], x -> x is not null) end as __rt_columns
                from ({expected}) m left join {held} h on {on}
                where h.{q(keys[0])} is null or len(list_filter([{", ".join(differs) or "null::varchar"}], x -> x is not null)) > 0"""
        )
        checked = int(con.execute(f"select count(*) from ({expected})").fetchone()[0])
        problems = int(con.execute(f"select count(*) from {table}").fetchone()[0])
        return Verified(table, checked, problems)

    def seal(self, records: Records) -> str:
        """What the table holds now, for ``sync plan`` / ``apply`` (its digest over the model's
        columns, whichever of them it has)."""
        if not self._exists():
            return "absent"
        present = self._table_columns()
        return self._digest([c for c in records.columns if c in present]) or "unknown"

    def fields(self, records: Records, identities: str) -> str:
        """The fields the records of ``identities`` would change: a work table of their key
        columns, ``__rt_column``, ``__rt_old`` (what the destination holds) and ``__rt_new``
        (what would be written), one row per field that differs."""
        model = self.model
        assert model is not None
        keys = self.settings.primary_key
        key_list = ", ".join(q(k) for k in keys)
        expected = f"select m.* from {records.accepted()} m semi join ({identities}) i on " + " and ".join(
            f"m.{q(k)} = i.{q(k)}" for k in keys
        )
        held = self._read_back(records, f"select {key_list} from ({expected})", model.columns)
        on = " and ".join(f"h.{q(k)} = m.{q(k)}" for k in keys)
        fields = ", ".join(
            f"""struct_pack(c := {literal(c)}, o := h.{q(c)}::varchar, n := m.{q(c)}::varchar,
                            d := try_cast(h.{q(c)} as {model.types[c]}) is distinct from m.{q(c)})"""
            for c in model.columns
            if c not in keys
        )
        table = records.table("rt_fields")
        records.con.execute(
            f"""create or replace table {table} as
                select {key_list}, f.c as __rt_column, f.o as __rt_old, f.n as __rt_new
                from (select {", ".join(f"m.{q(k)}" for k in keys)}, unnest([{fields or "null"}]) as f
                      from ({expected}) m join {held} h on {on})
                where f.d"""
        )
        return table

    def extra(self, records: Records) -> str | None:
        """Rows of the table whose key the model does not have (a DuckDB temp table)."""
        if not self._exists():
            return None
        keys = self.settings.primary_key
        key_list = ", ".join(q(k) for k in keys)
        extra = records.table("rt_extra")
        self._work(
            records,
            f"""create or replace table {extra} as
                select {key_list} from {self.remote} anti join (select {key_list} from {records.accepted()}) m
                using ({key_list})""",
        )
        return extra

    def held(self, records: Records) -> str | None:
        """Every key of the table (a work table), to re-own a sync whose state was lost."""
        if not self._exists():
            return None
        table = records.table("rt_held_keys")
        keys = ", ".join(q(k) for k in self.settings.primary_key)
        self._work(records, f"create or replace table {table} as select {keys} from {self.remote}")
        return table

    def after_commit(self, refresh_due: list[str]) -> list[str]:
        if refresh_due and self.refresh is not None:
            return self.refresh(refresh_due)
        return []

    def close(self) -> None:
        if not self.capabilities.transactional:  # a session of its own
            self.pg.detach()


def _hashable(pg_type_name: str) -> bool:
    """Whether Postgres hashes a column of this type itself (others are hashed as text)."""
    base = re.sub(r"\(.*?\)", "", pg_type_name).replace(" without time zone", "").replace(" with time zone", "")
    return base.strip() in HASHABLE and not pg_type_name.endswith("[]")


def _pg_literal(value: Any, pg_type_name: str) -> str:
    """A key value as a typed Postgres literal (keys are scalars: numbers, text, dates, times)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):  # quoted: Postgres reads NaN, inf and -inf only as strings
        return f"{literal(repr(value))}::{pg_type_name}"
    if isinstance(value, bytes):
        return f"'\\x{value.hex()}'::bytea"
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return f"{literal(text)}::{pg_type_name}"


__all__ = ["PostgresDestination", "pg_type"]
_ = duck_ident
