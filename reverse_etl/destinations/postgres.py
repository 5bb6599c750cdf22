"""Postgres destination: the changed records into a staging table, then one set-based statement.

Everything, including the sync state and the run's record, happens in the run's one
transaction on the state's Postgres (``reverse_etl.pg``: the run's DuckDB attached to it): a
failed or killed run leaves the table as it was. Only records that changed since the last run
leave DuckDB, by binary COPY; a table the run itself created (nobody else can see it yet) gets
them straight, without staging, and its primary key afterwards.

- ``upsert`` / ``mirror``: ``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE`` the row really
  differs (``IS DISTINCT FROM``); ``RETURNING (xmax = 0)`` tells inserts from updates, so the
  counts are exact. ``mirror`` then deletes the rows this sync wrote before and the model no
  longer has (from the sync state: rows written by anyone else are never touched).
  ``track_changes`` keeps the previous value of a column and when it really changed.
- ``insert_only``: ``ON CONFLICT (key) DO NOTHING`` on the destination's unique key, so even two
  concurrent runs (or two syncs feeding one queue) never insert a key twice.
- ``replace``: every row goes to a staging table; if anything changed, one short transaction
  end locks the table, ``TRUNCATE``s it and inserts the staged rows. The table keeps its OID,
  so the materialized views built on it stay valid (a rename swap would leave them reading the
  old table); then the serving models are refreshed ``CONCURRENTLY`` by dbt, after the commit.

Drift: each run compares the table's row count with the records the state says this sync
wrote; when they differ (a table dropped, truncated, rows deleted by hand) one anti-join finds
the lost records and they are written again, counted as ``healed``. ``insert_only`` never
heals: a delivered row belongs to the app (which may consume and delete it).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from reverse_etl.counts import SyncCounts
from reverse_etl.destinations.base import Changes, Drift, StateView
from reverse_etl.errors import SyncError
from reverse_etl.pg import Postgres
from reverse_etl.records import (
    CHANGE,
    CHANGED,
    EVERY,
    FINGERPRINT,
    HEALED,
    NEW,
    ROWS,
    RecordShape,
    fingerprint,
    payload_columns,
)
from reverse_etl.spec import SyncSpec
from reverse_etl.state import DDL_LOCK, SCHEMA
from roundtrip.core.sql import literal, postgres_type, quote

log = logging.getLogger(__name__)
HEALED_FLAG = "__rt_healed"


def pg_type(arrow_type: pa.DataType) -> str:
    """Column type for a table the sync creates (an existing table keeps its own types)."""
    found = postgres_type(arrow_type)
    if found is None:
        raise SyncError(f"no Postgres type for Arrow type {arrow_type}: cast the column in the model")
    return found


class PostgresDestination:
    transactional = True

    def __init__(
        self, spec: SyncSpec, pg: Postgres | None, refresh: Callable[[list[str]], list[str]] | None = None
    ) -> None:
        self.spec = spec
        self.settings = spec.settings
        self.pg = pg
        self.refresh = refresh
        schema, table = spec.target.split(".")
        self.schema, self.table = schema, table
        self.relation = f"{quote(schema)}.{quote(table)}"
        digest = hashlib.sha1(spec.name.encode()).hexdigest()[:16]
        self.stage = f"{SCHEMA}.{quote('stage_' + digest)}"  # work tables of this run, dropped before its commit
        self.stage_name = f"stage_{digest}"
        self.gone_table = f"gone_{digest}"
        self.columns: list[str] | None = None
        self.swap_due = False  # replace: something changed since the last run
        self.gone = 0  # replace: records of the last run the model no longer has
        self.created = False  # the table did not exist before this run
        self.nulled: list[str] = []  # append_new_columns: removed columns set to NULL in our rows
        self.refresh_due: list[str] = []

    def _pg(self) -> Postgres:
        if self.pg is None:
            raise RuntimeError("no Postgres session")
        return self.pg

    def _remote(self) -> str:
        return self._pg().relation(self.schema, self.table)

    # ---------------------------------------------------------------- records

    def shape(self, columns: list[str]) -> RecordShape:
        keys, track = self.settings.primary_key, self.settings.track_changes
        if track:
            clash = [c for c in (track.previous, track.changed_at) if c in columns]
            if clash:
                raise SyncError(f"sync {self.spec.name}: track_changes columns {clash} already come from the model")
        on = " and ".join(f"m.{quote(k)} = c.{quote(k)}" for k in keys)
        return RecordShape(
            identity={k: quote(k) for k in keys},
            records=f"select {', '.join(quote(k) for k in keys)}, {fingerprint(columns)} as {FINGERPRINT}, 1 as {ROWS} from {{rows}}",
            written=f"select m.*, c.{FINGERPRINT}, c.{ROWS}, c.{CHANGE} from {{rows}} m join {{records}} c on {on}",
            required={"track_changes.column": [track.column]} if track else {},
        )

    def _exists(self) -> bool:
        return bool(self._pg().scalar(f"select to_regclass({literal(self.relation)}) is not null"))

    def drift(self, owned: int, state: str) -> Drift:
        if self.settings.mode == "insert_only" or owned == 0:
            return Drift()
        if not self._exists():
            log.warning("sync %s: %s is gone; writing its %d records again", self.spec.name, self.spec.target, owned)
            return Drift(all_lost=True)
        if int(self._pg().scalar(f"select count(*) from {self.relation}") or 0) == owned:
            return Drift()  # the cheap check: as many rows as the state says we wrote
        keys = self.settings.primary_key
        on = " and ".join(f"d.{quote(k)} = s.{quote(k)}" for k in keys)
        held = f"(select {', '.join(quote(k) for k in keys)} from {self._remote()})"
        return Drift(
            lost=f"select {', '.join(f's.{quote(k)}' for k in keys)} from {state} s anti join {held} d on {on} where s.recorded"
        )

    # ---------------------------------------------------------------- table

    def _prepare(self, changes: Changes) -> None:
        """Create the table if it does not exist; otherwise apply the schema change and check
        the table can take the rows. Then the run's staging table, typed like the table."""
        pg = self._pg()
        schema = changes.arrow_schema()
        columns = payload_columns(schema)
        track = self.settings.track_changes
        if not self._exists():
            pg.query(f"select pg_advisory_xact_lock({DDL_LOCK})")  # concurrent first runs: one creates
            # (a run that waited here finds the table the other one committed)
            self.created = not self._exists()
        if self.created:
            pg.execute(f"create schema if not exists {quote(self.schema)}")
            types = {f.name: pg_type(f.type) for f in schema if f.name in columns}
            defs = [f"{quote(c)} {types[c]}" for c in columns]
            if track:
                defs += [f"{quote(track.previous)} {types[track.column]}", f"{quote(track.changed_at)} timestamptz"]
            # the primary key comes after the first COPY (write): one sorted index build is
            # cheaper than a million index insertions
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
        pg = self._pg()
        wanted = [*columns, *([] if self.settings.mode == "replace" else [HEALED_FLAG])]
        if not fresh:
            present = pg.query(
                f"""select attname::text from pg_attribute where attrelid = to_regclass({literal(self.stage)})
                    and attnum > 0 and not attisdropped order by attnum"""
            )
            if [r[0] for r in present] == wanted:
                pg.execute(f"truncate {self.stage}")
                return
        cols = ", ".join(quote(c) for c in columns)
        pg.execute(f"drop table if exists {self.stage}")
        pg.execute(f"create unlogged table {self.stage} as select {cols} from {self.relation} limit 0")
        if self.settings.mode != "replace":
            pg.execute(f"alter table {self.stage} add column {HEALED_FLAG} boolean not null default false")
        pg.refresh_catalog()

    def _apply_schema_change(self, changes: Changes, schema: pa.Schema) -> None:
        change, policy = changes.schema_change, self.settings.on_schema_change
        if not change:
            return
        pg = self._pg()
        present = self._table_columns()
        for column in change.added:
            if column not in present:
                pg.execute(
                    f"alter table {self.relation} add column {quote(column)} {pg_type(schema.field(column).type)}"
                )
        if policy == "sync_all_columns":
            for column in change.removed:
                if column in present:
                    pg.execute(f"alter table {self.relation} drop column {quote(column)}")
            for column in change.retyped:
                kind = pg_type(schema.field(column).type)
                pg.execute(
                    f"alter table {self.relation} alter column {quote(column)} type {kind} using {quote(column)}::{kind}"
                )
        elif self.settings.mode != "insert_only":  # append_new_columns: no stale values in our rows
            self.nulled = [c for c in change.removed if c in present]
        log.info("sync %s: %s follows the model's columns (%s)", self.spec.name, self.spec.target, change.describe())

    def _table_columns(self) -> set[str]:
        rows = self._pg().query(
            f"""select attname::text from pg_attribute
                where attrelid = {literal(self.relation)}::regclass and attnum > 0 and not attisdropped"""
        )
        return {r[0] for r in rows}

    def _add_primary_key(self) -> None:
        keys = ", ".join(quote(k) for k in self.settings.primary_key)
        self._pg().execute(f"alter table {self.relation} add primary key ({keys})")

    def _check_table(self, columns: list[str]) -> None:
        track = self.settings.track_changes
        needed = columns + ([track.previous, track.changed_at] if track else [])
        missing = [c for c in needed if c not in self._table_columns()]
        if missing:
            raise SyncError(
                f"sync {self.spec.name}: {self.spec.target} has no column(s) {missing}",
                hint="add them, or set meta.sync.on_schema_change: append_new_columns",
            )
        if self.settings.mode == "replace":
            return
        keys = sorted(self.settings.primary_key)
        array = "array[" + ", ".join(literal(k) for k in keys) + "]::text[]"
        unique = self._pg().scalar(
            f"""select exists (
                   select 1 from pg_index i
                   where i.indrelid = {literal(self.relation)}::regclass and i.indisunique and i.indpred is null
                     and i.indnkeyatts = {len(keys)}
                     and (select array_agg(a.attname::text order by a.attname)
                          from pg_attribute a where a.attrelid = i.indrelid and a.attnum = any(i.indkey[:i.indnkeyatts]))
                         = {array})"""
        )
        if not unique:
            raise SyncError(
                f"sync {self.spec.name}: {self.spec.target} needs a unique index on ({', '.join(keys)}) "
                f"for mode {self.settings.mode}"
            )

    # ---------------------------------------------------------------- batches

    def write(self, changes: Changes) -> SyncCounts:
        plan, mode = changes.plan, self.settings.mode
        self.gone = changes.gone
        if plan.records == 0:
            return SyncCounts()  # an empty model creates nothing (replace: see finish)
        self._prepare(changes)
        if mode == "replace":
            return self._stage_for_replace(changes)
        kinds = (NEW,) if mode == "insert_only" else (NEW, CHANGED, HEALED)
        to_send = plan.new if mode == "insert_only" else plan.sent
        counts = SyncCounts(unchanged=plan.records - to_send)
        if not to_send:
            self._drop_work_tables()
            return counts
        written = changes.written(kinds)
        cols = ", ".join(quote(c) for c in self.columns or [])
        pg = self._pg()
        if self.created:  # only this transaction sees the table: no conflicts to resolve
            track = self.settings.track_changes
            extra = ""
            if track:
                now = pg.scalar("select now()::text")  # the transaction's time, as Postgres says it
                cols += f", {quote(track.previous)}, {quote(track.changed_at)}"
                extra = f", null, {literal(str(now))}::timestamptz"
            selected = ", ".join(quote(c) for c in self.columns or [])
            # in key order: later upserts probe the key in order, so they walk the table's pages
            # in order too instead of at random (2-3x faster once it outgrows shared_buffers)
            order = ", ".join(quote(k) for k in self.settings.primary_key)
            pg.con.execute(
                f"insert into {self._remote()} ({cols}) select {selected}{extra} from ({written}) order by {order}"
            )
            changes.handed(to_send)
            counts.inserted = plan.new
            counts.healed = to_send - plan.new  # the table was dropped: every record it had is back
            self._add_primary_key()
            self._drop_work_tables()
            return counts
        healed = f"{CHANGE} = {HEALED}"
        pg.con.execute(
            f"insert into {pg.relation(SCHEMA, self.stage_name)} ({cols}, {HEALED_FLAG}) select {cols}, {healed} from ({written})"
        )
        changes.handed(to_send)
        pg.execute(f"analyze {self.stage}")
        counts.inserted, counts.updated = self._apply(healed=False)
        healed_inserts, healed_updates = self._apply(healed=True) if plan.healed else (0, 0)
        counts.healed = healed_inserts + healed_updates
        self._null_removed_columns()
        counts.unchanged += to_send - counts.inserted - counts.updated - counts.healed  # sent, but already so
        self._drop_work_tables()
        return counts

    def _counted(self, statement: str) -> tuple[int, int]:
        """Run a data-modifying ``statement`` whose ``returning`` gives one boolean per row
        (``is_insert``); returns (true, false) counts. (``postgres_query`` only reads: the
        counts go through a temporary table.)"""
        pg = self._pg()
        pg.execute("create temp table if not exists _rt_counts (a bigint, b bigint)")
        pg.execute("truncate _rt_counts")
        pg.execute(
            f"with done as ({statement}) insert into _rt_counts "
            "select count(*) filter (where is_insert), count(*) filter (where not is_insert) from done"
        )
        row = pg.query("select a, b from _rt_counts")
        return (int(row[0][0]), int(row[0][1])) if row else (0, 0)

    def _apply(self, healed: bool) -> tuple[int, int]:
        """One set-based statement from the staging table into the table: (inserted, updated)."""
        keys = self.settings.primary_key
        cols = ", ".join(quote(c) for c in self.columns or [])
        conflict = ", ".join(quote(k) for k in keys)
        order = conflict  # same lock order in concurrent runs: no deadlocks
        which = f"{'' if healed else 'not '}{HEALED_FLAG}"
        if self.settings.mode == "insert_only":
            return self._counted(
                f"""insert into {self.relation} ({cols}) select {cols} from {self.stage} where {which} order by {order}
                    on conflict ({conflict}) do nothing
                    returning true as is_insert"""
            )
        others = [c for c in self.columns or [] if c not in keys]
        insert_cols, select_cols, sets = cols, cols, [f"{quote(c)} = excluded.{quote(c)}" for c in others]
        track = self.settings.track_changes
        if track:
            col, prev, at = quote(track.column), quote(track.previous), quote(track.changed_at)
            insert_cols += f", {prev}, {at}"
            select_cols += ", null, now()"
            moved = f"t.{col} is distinct from excluded.{col}"  # NULL-safe
            sets += [
                f"{prev} = case when {moved} then t.{col} else t.{prev} end",
                f"{at} = case when {moved} then now() else t.{at} end",
            ]
        if others:
            differs = (
                f"({', '.join(f't.{quote(c)}' for c in others)}) is distinct from "
                f"({', '.join(f'excluded.{quote(c)}' for c in others)})"
            )
            action = f"do update set {', '.join(sets)} where {differs}"
        else:
            action = "do nothing"
        return self._counted(
            f"""insert into {self.relation} as t ({insert_cols})
                select {select_cols} from {self.stage} where {which} order by {order}
                on conflict ({conflict}) {action}
                returning (xmax = 0) as is_insert"""
        )

    def _null_removed_columns(self) -> None:
        """append_new_columns: a column the model lost holds NULL, not a stale value, in every
        row this sync wrote (every record was re-sent: its fingerprint changed with the columns)."""
        if not self.nulled:
            return
        match = " and ".join(f"t.{quote(k)} = s.{quote(k)}" for k in self.settings.primary_key)
        sets = ", ".join(f"{quote(c)} = null" for c in self.nulled)
        self._pg().execute(f"update {self.relation} t set {sets} from {self.stage} s where {match}")

    def _stage_for_replace(self, changes: Changes) -> SyncCounts:
        """Every record to the staging table, when a swap will follow (something changed)."""
        plan = changes.plan
        self.swap_due = bool(plan.sent or changes.gone or self.created or changes.schema_change)
        if self.swap_due:
            cols = ", ".join(quote(c) for c in self.columns or [])
            pg = self._pg()
            pg.con.execute(
                f"insert into {pg.relation(SCHEMA, self.stage_name)} ({cols}) select {cols} from ({changes.written(EVERY)})"
            )
            changes.handed(plan.records)
        return SyncCounts(inserted=plan.new, updated=plan.changed, unchanged=plan.unchanged, healed=plan.healed)

    def _drop_work_tables(self) -> None:
        """Empty the staging table (it stays for the next run)."""
        self._pg().execute(f"truncate {self.stage}")

    # ---------------------------------------------------------------- end of run

    def finish(self, state: StateView) -> SyncCounts:
        mode = self.settings.mode
        if mode == "mirror":
            return SyncCounts(deleted=self._delete_gone(state))
        if mode != "replace":
            return SyncCounts()
        deleted = self.gone
        pending = state.pending_refresh()
        if self.columns is None:  # the model is empty: replace with nothing
            self._prepare_empty()
        if self.swap_due or deleted or self.created:
            self._swap()
            pending = sorted(set(pending) | {m.name for m in self.spec.refresh})
        self._drop_work_tables()
        if pending:
            state.owe_refresh(pending)  # cleared once dbt has refreshed them
        self.refresh_due = pending
        return SyncCounts(deleted=deleted)

    def _prepare_empty(self) -> None:
        if not self._exists():
            raise SyncError(
                f"sync {self.spec.name}: model {self.spec.model} is empty and {self.spec.target} does not exist"
            )
        self.columns = []

    def _swap(self) -> None:
        """TRUNCATE + INSERT in the run's transaction: the table keeps its OID, indexes, grants
        and dependent materialized views; the exclusive lock is held only for this step."""
        pg = self._pg()
        pg.execute(f"lock table {self.relation} in access exclusive mode")
        pg.execute(f"truncate {self.relation}")
        if self.columns:
            cols = ", ".join(quote(c) for c in self.columns)
            pg.execute(f"insert into {self.relation} ({cols}) select {cols} from {self.stage}")
        log.info("sync %s: replaced the rows of %s", self.spec.name, self.spec.target)

    def _delete_gone(self, state: StateView) -> int:
        """Delete rows this sync wrote before and the model no longer has (their identity: the
        state's ``gone``). Returns the rows really deleted."""
        gone = state.gone_sql()
        if gone is None or not self._exists():
            return 0
        pg = self._pg()
        keys = self.settings.primary_key
        table = f"{SCHEMA}.{quote(self.gone_table)}"
        if pg.scalar(f"select to_regclass({literal(table)}) is null"):  # kept from run to run, empty
            keys_sql = ", ".join(quote(k) for k in keys)
            pg.execute(f"create unlogged table {table} as select {keys_sql} from {self.relation} limit 0")
            pg.refresh_catalog()
        pg.con.execute(f"insert into {pg.relation(SCHEMA, self.gone_table)} select * from ({gone})")
        match = " and ".join(f"t.{quote(k)} = g.{quote(k)}" for k in keys)
        deleted, _ = self._counted(
            f"delete from {self.relation} t using {table} g where {match} returning true as is_insert"
        )
        pg.execute(f"truncate {table}")
        return deleted

    def after_commit(self) -> list[str]:
        if self.refresh_due and self.refresh is not None:
            return self.refresh(self.refresh_due)
        return []

    def close(self) -> None:
        pass


__all__ = ["PostgresDestination", "pg_type"]
_ = Any
