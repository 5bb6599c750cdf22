"""Per-sync state in the `reverse_etl` schema of the Postgres at ROUNDTRIP_POSTGRES_URL.

- ``sync_rows``: one fingerprint per record a sync wrote (``row_key`` is the record's identity as
  JSON text). Change detection compares against it, so unchanged records are never sent, and
  ``mirror`` deletes exactly the records this sync wrote before and the model no longer has.
- ``rejected_rows``: rows rejected by a run (NULL or duplicate key), with the reason and the row.
- ``runs``: the run history (see ``reverse_etl.runs``).
- ``pending_refreshes``: replace syncs whose serving models still need a refresh.
- ``in_doubt``: the write-ahead of destinations outside the state's transaction (Redis): the
  records a run is about to send, committed before the first write and cleared in the commit
  that records what was written. A run killed in between leaves them; the next run reads their
  state as unknown and sends them again, so a crash can never leave a wrong value behind an
  "unchanged" record.
- ``sync_schemas``: the model columns (and types) each sync last sent, for ``on_schema_change``.

State changes ride in the run's transaction (the same one as the writes when the destination is
Postgres): a failed run leaves the state as it was, and the next run resends what it had sent.

The state is only ever read and written whole-sync and set-based: DuckDB reads a sync's rows
once per run and classifies the model against them (``reverse_etl.records``); new records' rows
are COPYed in, changed ones updated by one join, gone ones deleted by one join. So
``sync_rows`` has no index: a b-tree on random keys cost more to maintain (4 s per million
new records) than every set-based read of it. Keys stay unique because only the run holding the
sync's lock writes its rows, and it inserts only keys its snapshot did not have.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from reverse_etl.records import REASON, ROW, ROW_KEY
from reverse_etl.spec import SyncSpec

log = logging.getLogger(__name__)

SCHEMA = "reverse_etl"
DDL_LOCK = "hashtextextended('reverse_etl:ddl', 0)"
KEEP_REJECTED_RUNS = 30  # rejected rows are kept for the last runs of each sync

STATE_DDL = f"""
create schema if not exists {SCHEMA};
create table if not exists {SCHEMA}.runs (
    run_id bigint generated always as identity primary key,
    sync text not null,
    mode text not null,
    destination text not null,
    status text not null,
    started_at timestamptz not null default clock_timestamp(),
    ended_at timestamptz,
    attempts integer not null default 1,
    read bigint, inserted bigint, updated bigint, unchanged bigint, deleted bigint, rejected bigint,
    error text
);
alter table {SCHEMA}.runs add column if not exists healed bigint;
create index if not exists runs_by_sync on {SCHEMA}.runs (sync, run_id desc);
-- state of the first design (md5 fingerprints as uuid, jsonb keys): nothing in it would match
do $$ begin
    if exists (select 1 from pg_attribute where attrelid = to_regclass('{SCHEMA}.sync_rows')
               and attname = 'fingerprint' and atttypid = 'uuid'::regtype) then
        raise warning 'reverse_etl: dropping the sync state of an earlier version; each sync resends once';
        drop table {SCHEMA}.sync_rows;
    end if;
end $$;
create table if not exists {SCHEMA}.sync_rows (
    sync text not null,
    row_key text not null,
    fingerprint bigint not null
);
create table if not exists {SCHEMA}.rejected_rows (
    run_id bigint not null references {SCHEMA}.runs on delete cascade,
    sync text not null,
    row_key jsonb not null,
    reason text not null,
    row_data jsonb not null
);
create index if not exists rejected_rows_by_run on {SCHEMA}.rejected_rows (run_id);
create table if not exists {SCHEMA}.pending_refreshes (
    sync text primary key,
    models text[] not null,
    since timestamptz not null default now()
);
create table if not exists {SCHEMA}.in_doubt (
    sync text not null,
    row_key text not null,
    run_id bigint not null
);
create table if not exists {SCHEMA}.sync_schemas (
    sync text primary key,
    columns jsonb not null,
    recorded_at timestamptz not null default now()
);
create or replace view {SCHEMA}.latest_runs as
    select distinct on (sync) * from {SCHEMA}.runs order by sync, run_id desc;
"""


CURRENT_STATE = f"""select to_regclass('{SCHEMA}.sync_schemas') is not null and exists (
    select 1 from pg_attribute where attrelid = to_regclass('{SCHEMA}.latest_runs') and attname = 'healed')
    and exists (select 1 from pg_attribute where attrelid = to_regclass('{SCHEMA}.sync_rows')
    and attname = 'fingerprint' and atttypid = 'bigint'::regtype)"""


def ensure_state_schema(conn: Any) -> None:
    """Create the state tables if needed (serialized: concurrent first runs do not race)."""
    present = conn.execute(CURRENT_STATE).fetchone()
    if present and present[0]:  # the DDL's last object and the current state table: all there
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(f"select pg_advisory_xact_lock({DDL_LOCK})")
        cur.execute(STATE_DDL)


def state_schema_exists(conn: Any) -> bool:
    """The current state schema is there (a dry run never creates it, nor upgrades an older one)."""
    row = conn.execute(CURRENT_STATE).fetchone()
    return bool(row and row[0])


def csv_bytes(table: pa.Table | pa.RecordBatch) -> bytes:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
    return buffer.getvalue()


def copy_arrow(cur: Any, table: str, columns: list[str], data: pa.Table | pa.RecordBatch) -> None:
    """COPY Arrow data into ``table`` (CSV: NULL is an empty field, '' a quoted one)."""
    with cur.copy(f"copy {table} ({', '.join(columns)}) from stdin (format csv)") as copy:
        copy.write(csv_bytes(data))


def copy_batches(cur: Any, table: str, columns: list[str], batches: Iterable[pa.RecordBatch]) -> int:
    """One COPY of every batch into ``table``; returns the rows sent.

    A helper thread reads the next batch (DuckDB) and encodes it as CSV (Arrow) while this one
    sends the previous one, so Postgres and DuckDB work at the same time; at most two batches
    are in memory."""
    rows = 0
    with cur.copy(f"copy {table} ({', '.join(columns)}) from stdin (format csv)") as copy:
        for batch in prefetched((b.num_rows, csv_bytes(b)) for b in batches):
            rows += batch[0]
            copy.write(batch[1])
    return rows


_DONE = object()


def prefetched(items: Iterator[Any]) -> Iterator[Any]:
    """``items``, computed one ahead in a helper thread (errors re-raised here)."""
    slot: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slot.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slot.put(_DONE)
        except BaseException as exc:
            slot.put(exc)

    worker = threading.Thread(target=produce, name="reverse_etl-prefetch", daemon=True)
    worker.start()
    try:
        while (item := slot.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


class StateStore:
    """One sync's state, on the run's connection. ``dry_run`` reads it and writes nothing."""

    def __init__(self, conn: Any, spec: SyncSpec, run_id: int | None, dry_run: bool = False) -> None:
        self.conn = conn
        self.sync = spec.name
        self.run_id = run_id
        self.dry_run = dry_run
        self.rows_table = f"{SCHEMA}.sync_rows"
        self.recorded = state_schema_exists(conn)  # a dry run before any run: no state schema yet

    def snapshot_query(self, full_resync: bool = False) -> str | None:
        """What DuckDB reads as this sync's state: ``row_key``, ``fingerprint`` and whether the
        state records it (None: nothing was ever recorded). A record in doubt (a run was killed
        while sending it) has no fingerprint: it is sent again.
        ``full_resync``: every record in doubt (sent again), ownership kept (mirror deletes)."""
        if not self.recorded:
            return None
        sync = self.sync.replace("'", "''")
        doubts = f"(select distinct row_key from {SCHEMA}.in_doubt where sync = '{sync}')"
        # a record a killed run was sending but never recorded may be in the destination: it
        # counts as written, contents unknown (sent again if the model has it, deleted by
        # mirror if not)
        unrecorded = f"""select d.row_key, null::bigint, false from {doubts} d
                         where not exists (select 1 from {self.rows_table} s
                                           where s.sync = '{sync}' and s.row_key = d.row_key)"""
        if full_resync:
            return f"select row_key, null::bigint, true from {self.rows_table} where sync = '{sync}' union all {unrecorded}"
        return f"""select s.row_key, case when d.row_key is null then s.fingerprint end, true
                   from {self.rows_table} s
                   left join {doubts} d on d.row_key = s.row_key
                   where s.sync = '{sync}'
                   union all {unrecorded}"""

    # ---------------------------------------------------------------- write-ahead

    def mark_in_doubt(self, side: Any, keys: Iterable[pa.RecordBatch]) -> int:
        """Commit, on ``side`` (an autocommit connection of its own), the keys of the records
        about to be sent to a destination outside this transaction. Returns how many."""
        if self.dry_run:
            return 0
        run = pa.scalar(self.run_id or 0, pa.int64())
        sync = pa.scalar(self.sync)
        with side.cursor() as cur:
            return copy_batches(
                cur,
                f"{SCHEMA}.in_doubt",
                ["sync", "row_key", "run_id"],
                (
                    b.add_column(0, "sync", pa.repeat(sync, b.num_rows)).append_column(
                        "run_id", pa.repeat(run, b.num_rows)
                    )
                    for b in keys
                ),
            )

    def clear_in_doubt(self) -> None:
        """In the run's transaction, with the state that records what was written."""
        if not self.dry_run and self.recorded:
            self.conn.execute(f"delete from {SCHEMA}.in_doubt where sync = %s", (self.sync,))

    # ---------------------------------------------------------------- columns sent

    def recorded_columns(self) -> dict[str, str] | None:
        if not self.recorded:
            return None
        row = self.conn.execute(f"select columns from {SCHEMA}.sync_schemas where sync = %s", (self.sync,)).fetchone()
        return dict(row[0]) if row else None

    def record_columns(self, columns: dict[str, str]) -> None:
        if self.dry_run:
            return
        from psycopg.types.json import Jsonb

        self.conn.execute(
            f"""insert into {SCHEMA}.sync_schemas (sync, columns) values (%s, %s)
                on conflict (sync) do update set columns = excluded.columns, recorded_at = now()
                where {SCHEMA}.sync_schemas.columns is distinct from excluded.columns""",
            (self.sync, Jsonb(columns)),
        )

    def remember(self, new: Iterable[pa.RecordBatch], changed: Iterable[pa.RecordBatch]) -> None:
        """After the writes: record the fingerprints of the new records (COPY) and of the
        changed ones (COPY to a temporary table, then one update)."""
        if self.dry_run:
            return
        sync = pa.scalar(self.sync)
        with self.conn.cursor() as cur:
            # new keys: straight into the state (the snapshot had none of them)
            copy_batches(
                cur,
                self.rows_table,
                ["sync", "row_key", "fingerprint"],
                (b.add_column(0, "sync", pa.repeat(sync, b.num_rows)) for b in new),
            )
            cur.execute("create temp table _rt_changed (row_key text, fingerprint bigint) on commit drop")
            if copy_batches(cur, "_rt_changed", ["row_key", "fingerprint"], changed):
                cur.execute("analyze _rt_changed")  # temp tables get no autovacuum: without stats, bad joins
                cur.execute(
                    f"""update {self.rows_table} s set fingerprint = c.fingerprint from _rt_changed c
                        where s.sync = %s and s.row_key = c.row_key""",
                    (self.sync,),
                )

    # ---------------------------------------------------------------- rejected rows

    def reject(self, batch: pa.RecordBatch) -> None:
        """Keep rejected rows where users can query them."""
        if self.dry_run:
            return
        data = pa.table(
            {
                "run_id": pa.array([self.run_id] * batch.num_rows, pa.int64()),
                "sync": pa.array([self.sync] * batch.num_rows, pa.string()),
                "row_key": batch[ROW_KEY],
                "reason": batch[REASON],
                "row_data": batch[ROW],
            }
        )
        with self.conn.cursor() as cur:
            copy_arrow(cur, f"{SCHEMA}.rejected_rows", list(data.schema.names), data)

    def prune_rejected(self) -> None:
        """Keep the rejected rows of the last runs of this sync only."""
        self.conn.execute(
            f"""delete from {SCHEMA}.rejected_rows where sync = %s and run_id < coalesce(
                    (select min(run_id) from (select run_id from {SCHEMA}.runs where sync = %s
                                              order by run_id desc limit {KEEP_REJECTED_RUNS}) recent), 0)""",
            (self.sync, self.sync),
        )

    # ---------------------------------------------------------------- gone records

    def stage_gone(self, keys: Iterable[pa.RecordBatch]) -> int:
        """The keys of the records gone from the model (DuckDB found them) into ``_rt_gone``."""
        with self.conn.cursor() as cur:
            cur.execute("create temp table _rt_gone (row_key text) on commit drop")
            staged = copy_batches(cur, "_rt_gone", ["row_key"], keys)
            cur.execute("analyze _rt_gone")
        return staged

    def iter_gone(self, size: int) -> Iterator[list[str]]:
        """The staged gone keys, ``size`` at a time (server-side cursor: bounded memory)."""
        with self.conn.cursor(name="rt_gone") as cur:
            cur.execute("select row_key from _rt_gone order by row_key")
            while rows := cur.fetchmany(size):
                yield [r[0] for r in rows]

    def forget_gone(self) -> int:
        """Forget the staged gone records; returns how many the state had."""
        cur = self.conn.execute(
            f"delete from {self.rows_table} s using _rt_gone g where s.sync = %s and s.row_key = g.row_key",
            (self.sync,),
        )
        return cur.rowcount

    # ---------------------------------------------------------------- replace: refreshes owed

    def pending_refresh(self) -> list[str]:
        if not self.recorded:
            return []
        row = self.conn.execute(
            f"select models from {SCHEMA}.pending_refreshes where sync = %s", (self.sync,)
        ).fetchone()
        return list(row[0]) if row else []

    def owe_refresh(self, models: list[str]) -> None:
        self.conn.execute(
            f"""insert into {SCHEMA}.pending_refreshes (sync, models) values (%s, %s)
                on conflict (sync) do update set models = excluded.models, since = now()""",
            (self.sync, models),
        )


def clear_pending_refresh(conn: Any, sync: str) -> None:
    conn.execute(f"delete from {SCHEMA}.pending_refreshes where sync = %s", (sync,))
