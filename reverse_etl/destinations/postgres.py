"""Postgres destination: COPY into a staging table, then one set-based statement per run.

Everything, including the sync state, happens in the run's one transaction: a failed or killed
run leaves the table as it was. Only records that changed since the last run leave DuckDB; a
table the run itself created (nobody else can see it yet) gets them by COPY, without staging.

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

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from reverse_etl.counts import SyncCounts
from reverse_etl.destinations.base import Changes, Drift, StateView
from reverse_etl.errors import SyncError
from reverse_etl.records import (
    CHANGE,
    CHANGED,
    FINGERPRINT,
    HEALED,
    KEY,
    NEW,
    ROWS,
    UNCHANGED,
    RecordShape,
    fingerprint,
    json_object,
    payload_columns,
)
from reverse_etl.spec import SyncSpec
from reverse_etl.state import DDL_LOCK, SCHEMA, copy_batches
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

    def __init__(self, spec: SyncSpec, conn: Any, refresh: Callable[[list[str]], list[str]] | None = None) -> None:
        self.spec = spec
        self.settings = spec.settings
        self.conn = conn
        self.refresh = refresh
        schema, table = spec.target.split(".")
        self.schema = schema
        self.relation = f"{quote(schema)}.{quote(table)}"
        self.columns: list[str] | None = None
        self.swap_due = False  # replace: something changed since the last run
        self.gone = 0  # replace: records of the last run the model no longer has
        self.created = False  # the table did not exist before this run
        self.nulled: list[str] = []  # append_new_columns: removed columns set to NULL in our rows
        self.refresh_due: list[str] = []

    # ---------------------------------------------------------------- records

    def shape(self, columns: list[str]) -> RecordShape:
        keys, track = self.settings.primary_key, self.settings.track_changes
        if track:
            clash = [c for c in (track.previous, track.changed_at) if c in columns]
            if clash:
                raise SyncError(f"sync {self.spec.name}: track_changes columns {clash} already come from the model")
        payload = ", ".join(f"{quote(c)} := {quote(c)}" for c in columns)
        return RecordShape(
            required={"track_changes.column": [track.column]} if track else {},
            state_key=json_object(keys),
            records=f"""select {", ".join(quote(k) for k in keys)}, {json_object(keys)} as {KEY},
                        {fingerprint(f"struct_pack({payload})")} as {FINGERPRINT}, 1 as {ROWS} from {{rows}}""",
            join_model_on=keys,
        )

    def _exists(self) -> bool:
        row = self.conn.execute("select to_regclass(%s) is not null", (self.relation,)).fetchone()
        return bool(row and row[0])

    def drift(self, owned: int) -> Drift:
        if self.settings.mode == "insert_only" or owned == 0:
            return Drift()
        if not self._exists():
            log.warning("sync %s: %s is gone; writing its %d records again", self.spec.name, self.spec.target, owned)
            return Drift(all_lost=True)
        row = self.conn.execute(f"select count(*) from {self.relation}").fetchone()
        if row and int(row[0]) == owned:
            return Drift()  # the cheap check: as many rows as the state says we wrote
        keys = self.settings.primary_key
        match = " and ".join(f"t.{quote(k)} = k.{quote(k)}" for k in keys)
        lost = f"""select s.row_key from {SCHEMA}.sync_rows s
                   cross join lateral jsonb_populate_record(null::{self.relation}, s.row_key::jsonb) k
                   where s.sync = {literal(self.spec.name)}
                     and not exists (select 1 from {self.relation} t where {match})"""
        return Drift(lost_sql=lost)

    # ---------------------------------------------------------------- table

    def _prepare(self, changes: Changes) -> None:
        """Create the table if it does not exist; otherwise apply the schema change and check
        the table can take the rows."""
        schema = changes.arrow_schema()
        columns = payload_columns(schema)
        track = self.settings.track_changes
        exists = "select to_regclass(%s) is not null"
        with self.conn.cursor() as cur:
            if not cur.execute(exists, (self.relation,)).fetchone()[0]:  # type: ignore[index]
                cur.execute(f"select pg_advisory_xact_lock({DDL_LOCK})")  # concurrent first runs: one creates
                # (a run that waited here finds the table the other one committed)
                self.created = not cur.execute(exists, (self.relation,)).fetchone()[0]  # type: ignore[index]
            if self.created:
                cur.execute(f"create schema if not exists {quote(self.schema)}")
                types = {f.name: pg_type(f.type) for f in schema if f.name in columns}
                defs = [f"{quote(c)} {types[c]}" for c in columns]
                if track:
                    defs += [f"{quote(track.previous)} {types[track.column]}", f"{quote(track.changed_at)} timestamptz"]
                # the primary key comes after the first COPY (write): one sorted index build is
                # cheaper than a million index insertions
                cur.execute(f"create table {self.relation} ({', '.join(defs)})")
                log.info("sync %s: created table %s", self.spec.name, self.spec.target)
                if self.settings.mode == "replace":
                    self._add_primary_key(cur)
            else:
                self._apply_schema_change(cur, changes, schema)
                self._check_table(cur, columns)
            cols = ", ".join(quote(c) for c in columns)
            stage = "_rt_replace" if self.settings.mode == "replace" else "_rt_stage"
            # typed like the destination, without its constraints or defaults
            cur.execute(f"create temp table {stage} on commit drop as select {cols} from {self.relation} limit 0")
            if stage == "_rt_stage":
                cur.execute(f"alter table _rt_stage add column {HEALED_FLAG} boolean not null default false")
        self.columns = columns

    def _apply_schema_change(self, cur: Any, changes: Changes, schema: pa.Schema) -> None:
        change, policy = changes.schema_change, self.settings.on_schema_change
        if not change:
            return
        present = self._table_columns(cur)
        for column in change.added:
            if column not in present:
                cur.execute(
                    f"alter table {self.relation} add column {quote(column)} {pg_type(schema.field(column).type)}"
                )
        if policy == "sync_all_columns":
            for column in change.removed:
                if column in present:
                    cur.execute(f"alter table {self.relation} drop column {quote(column)}")
            for column in change.retyped:
                kind = pg_type(schema.field(column).type)
                cur.execute(
                    f"alter table {self.relation} alter column {quote(column)} type {kind} using {quote(column)}::{kind}"
                )
        elif self.settings.mode != "insert_only":  # append_new_columns: no stale values in our rows
            self.nulled = [c for c in change.removed if c in present]
        log.info("sync %s: %s follows the model's columns (%s)", self.spec.name, self.spec.target, change.describe())

    def _table_columns(self, cur: Any) -> set[str]:
        return {
            r[0]
            for r in cur.execute(
                "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0 and not attisdropped",
                (self.relation,),
            )
        }

    def _add_primary_key(self, cur: Any) -> None:
        cur.execute(
            f"alter table {self.relation} add primary key ({', '.join(quote(k) for k in self.settings.primary_key)})"
        )

    def _check_table(self, cur: Any, columns: list[str]) -> None:
        track = self.settings.track_changes
        needed = columns + ([track.previous, track.changed_at] if track else [])
        present = self._table_columns(cur)
        missing = [c for c in needed if c not in present]
        if missing:
            raise SyncError(
                f"sync {self.spec.name}: {self.spec.target} has no column(s) {missing}",
                hint="add them, or set meta.sync.on_schema_change: append_new_columns",
            )
        if self.settings.mode == "replace":
            return
        keys = self.settings.primary_key
        unique = cur.execute(
            """select exists (
                   select 1 from pg_index i
                   where i.indrelid = %s::regclass and i.indisunique and i.indpred is null
                     and i.indnkeyatts = %s
                     and (select array_agg(a.attname::text order by a.attname)
                          from pg_attribute a where a.attrelid = i.indrelid and a.attnum = any(i.indkey[:i.indnkeyatts]))
                         = %s::text[])""",
            (self.relation, len(keys), sorted(keys)),
        ).fetchone()
        if not (unique and unique[0]):
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
        columns = [quote(c) for c in self.columns or []]
        with self.conn.cursor() as cur:
            if self.created:  # only this transaction sees the table: no conflicts to resolve
                track = self.settings.track_changes
                if track:
                    columns += [quote(track.previous), quote(track.changed_at)]
                if to_send:
                    copy_batches(cur, self.relation, columns, self._payload(changes.batches(kinds)))
                counts.inserted = plan.new
                counts.healed = to_send - plan.new  # the table was dropped: every record it had is back
                self._add_primary_key(cur)
                return counts
            if not to_send:
                return counts
            copy_batches(cur, "_rt_stage", [*columns, HEALED_FLAG], self._staged(changes.batches(kinds)))
            cur.execute("analyze _rt_stage")
            counts.inserted, counts.updated = self._apply(cur, healed=False)
            healed_inserts, healed_updates = self._apply(cur, healed=True) if plan.healed else (0, 0)
            counts.healed = healed_inserts + healed_updates
            self._null_removed_columns(cur)
        counts.unchanged += to_send - counts.inserted - counts.updated - counts.healed  # sent, but already so
        return counts

    def _payload(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The destination's columns of each batch (a created table: with track_changes' own)."""
        track = self.settings.track_changes if self.created else None
        # what now() says in this transaction, read here, before the COPY starts: the batches
        # are produced by a helper thread while the connection is busy with the COPY
        now = self.conn.execute("select now()").fetchone()[0] if track else None
        return self._with_columns(batches, track, now)

    def _with_columns(self, batches: Iterator[pa.RecordBatch], track: Any, now: Any) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            rows = batch.select(self.columns or [])
            if track:
                kind = rows.schema.field(track.column).type
                rows = rows.append_column(track.previous, pa.nulls(rows.num_rows, kind))
                stamp = pa.repeat(pa.scalar(now, pa.timestamp("us", "UTC")), rows.num_rows)
                rows = rows.append_column(track.changed_at, stamp)
            yield rows

    def _staged(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The batches for ``_rt_stage``: the destination's columns and whether the record heals."""
        import pyarrow.compute as pc

        for batch in batches:
            rows = batch.select(self.columns or [])
            yield rows.append_column(HEALED_FLAG, pc.equal(batch[CHANGE], pa.scalar(HEALED, pa.int8())))

    def _apply(self, cur: Any, healed: bool) -> tuple[int, int]:
        """One set-based statement from _rt_stage into the table: (inserted, updated)."""
        keys = self.settings.primary_key
        cols = ", ".join(quote(c) for c in self.columns or [])
        conflict = ", ".join(quote(k) for k in keys)
        order = conflict  # same lock order in concurrent runs: no deadlocks
        which = f"{'' if healed else 'not '}{HEALED_FLAG}"
        if self.settings.mode == "insert_only":
            row = cur.execute(
                f"""with inserted as (
                        insert into {self.relation} ({cols}) select {cols} from _rt_stage where {which} order by {order}
                        on conflict ({conflict}) do nothing
                        returning 1)
                    select count(*) from inserted"""
            ).fetchone()
            return (int(row[0]) if row else 0), 0
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
        row = cur.execute(
            f"""with upserted as (
                    insert into {self.relation} as t ({insert_cols})
                    select {select_cols} from _rt_stage where {which} order by {order}
                    on conflict ({conflict}) {action}
                    returning (xmax = 0) as is_insert)
                select count(*) filter (where is_insert), count(*) filter (where not is_insert) from upserted"""
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def _null_removed_columns(self, cur: Any) -> None:
        """append_new_columns: a column the model lost holds NULL, not a stale value, in every
        row this sync wrote (every record was re-sent: its fingerprint changed with the columns)."""
        if not self.nulled:
            return
        match = " and ".join(f"t.{quote(k)} = s.{quote(k)}" for k in self.settings.primary_key)
        sets = ", ".join(f"{quote(c)} = null" for c in self.nulled)
        cur.execute(f"update {self.relation} t set {sets} from _rt_stage s where {match}")

    def _stage_for_replace(self, changes: Changes) -> SyncCounts:
        """Every record to ``_rt_replace``, when a swap will follow (something changed)."""
        plan = changes.plan
        self.swap_due = bool(plan.sent or changes.gone or self.created or changes.schema_change)
        if self.swap_due:
            with self.conn.cursor() as cur:
                columns = [quote(c) for c in self.columns or []]
                every = (NEW, CHANGED, HEALED, UNCHANGED)
                copy_batches(
                    cur, "_rt_replace", columns, (b.select(self.columns or []) for b in changes.batches(every))
                )
        return SyncCounts(inserted=plan.new, updated=plan.changed, unchanged=plan.unchanged, healed=plan.healed)

    # ---------------------------------------------------------------- end of run

    def finish(self, state: StateView) -> SyncCounts:
        mode = self.settings.mode
        if mode == "mirror":
            return SyncCounts(deleted=self._delete_gone(state))
        if mode != "replace":
            return SyncCounts()
        deleted = state.forget_gone() if self.gone else 0
        pending = state.pending_refresh()
        if self.columns is None:  # the model is empty: replace with nothing
            self._prepare_empty()
        if self.swap_due or deleted or self.created:
            self._swap()
            pending = sorted(set(pending) | {m.name for m in self.spec.refresh})
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
        with self.conn.cursor() as cur:
            cur.execute(f"lock table {self.relation} in access exclusive mode")
            cur.execute(f"truncate {self.relation}")
            if self.columns:
                cols = ", ".join(quote(c) for c in self.columns)
                cur.execute(f"insert into {self.relation} ({cols}) select {cols} from _rt_replace")
        log.info("sync %s: replaced the rows of %s", self.spec.name, self.spec.target)

    def _delete_gone(self, state: StateView) -> int:
        """Delete rows this sync wrote before and the model no longer has (staged in ``_rt_gone``
        by the engine), forgetting them. Returns the rows really deleted."""
        if not self._exists():
            state.forget_gone()
            return 0
        keys = self.settings.primary_key
        match = " and ".join(f"t.{quote(k)} = k.{quote(k)}" for k in keys)
        row = self.conn.execute(
            f"""with removed as (
                    delete from {self.relation} t
                    using (select (jsonb_populate_record(null::{self.relation}, row_key::jsonb)).* from _rt_gone) k
                    where {match}
                    returning 1)
                select count(*) from removed"""
        ).fetchone()
        state.forget_gone()
        return int(row[0]) if row else 0

    def after_commit(self) -> list[str]:
        if self.refresh_due and self.refresh is not None:
            return self.refresh(self.refresh_due)
        return []

    def close(self) -> None:
        pass
