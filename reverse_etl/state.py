"""Per-sync state in the `reverse_etl` schema of the Postgres at ROUNDTRIP_POSTGRES_URL.

- ``sync_rows``: one fingerprint per record a sync wrote (``row_key`` is the record's identity as
  JSON). Change detection compares against it, so unchanged records are never sent, and
  ``mirror`` deletes exactly the records this sync wrote before and the model no longer has.
- ``rejected_rows``: rows rejected by a run (NULL or duplicate key), with the reason and the row.
- ``runs``: the run history (see ``reverse_etl.runs``).
- ``pending_refreshes``: replace syncs whose serving models still need a refresh.

State changes ride in the run's transaction (the same one as the writes when the destination is
Postgres): a failed run leaves the state as it was, and the next run resends what it had sent.
Per batch, keys and fingerprints go to a temporary table by COPY and are compared in one query.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from reverse_etl.source import FINGERPRINT, KEY, REASON, ROW, ROW_KEY
from reverse_etl.spec import SyncSpec

log = logging.getLogger(__name__)

SCHEMA = "reverse_etl"
UNCHANGED, NEW, CHANGED = 0, 1, 2
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
create index if not exists runs_by_sync on {SCHEMA}.runs (sync, run_id desc);
create table if not exists {SCHEMA}.sync_rows (
    sync text not null,
    row_key jsonb not null,
    fingerprint uuid not null,
    primary key (sync, row_key)
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
create or replace view {SCHEMA}.latest_runs as
    select distinct on (sync) * from {SCHEMA}.runs order by sync, run_id desc;
"""


def ensure_state_schema(conn: Any) -> None:
    """Create the state tables if needed (serialized: concurrent first runs do not race)."""
    present = conn.execute(f"select to_regclass('{SCHEMA}.latest_runs') is not null").fetchone()
    if present and present[0]:  # the DDL's last object: everything is there
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(f"select pg_advisory_xact_lock({DDL_LOCK})")
        cur.execute(STATE_DDL)


def state_schema_exists(conn: Any) -> bool:
    row = conn.execute(f"select to_regclass('{SCHEMA}.sync_rows') is not null").fetchone()
    return bool(row and row[0])


def csv_bytes(table: pa.Table | pa.RecordBatch) -> bytes:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
    return buffer.getvalue()


def copy_arrow(cur: Any, table: str, columns: list[str], data: pa.Table | pa.RecordBatch) -> None:
    """COPY Arrow data into ``table`` (CSV: NULL is an empty field, '' a quoted one)."""
    with cur.copy(f"copy {table} ({', '.join(columns)}) from stdin (format csv)") as copy:
        copy.write(csv_bytes(data))


class StateStore:
    """One sync's state, on the run's connection. ``dry_run`` reads it and writes nothing."""

    def __init__(self, conn: Any, spec: SyncSpec, run_id: int | None, dry_run: bool = False) -> None:
        self.conn = conn
        self.sync = spec.name
        self.run_id = run_id
        self.dry_run = dry_run
        self.track_seen = spec.mode in ("mirror", "replace")  # only they look for records gone
        self.rows_table = f"{SCHEMA}.sync_rows"
        with conn.cursor() as cur:
            if dry_run and not state_schema_exists(conn):  # nothing recorded yet: compare with nothing
                cur.execute(
                    "create temp table _rt_sync_rows (sync text, row_key jsonb, fingerprint uuid) on commit drop"
                )
                self.rows_table = "_rt_sync_rows"
            cur.execute("create temp table _rt_batch (ord integer, row_key jsonb, fingerprint uuid) on commit drop")
            cur.execute("create temp table _rt_seen (row_key jsonb primary key) on commit drop")

    # ---------------------------------------------------------------- records

    def classify(self, batch: pa.RecordBatch) -> np.ndarray:
        """Per record: NEW (never written by this sync), CHANGED (fingerprint differs) or UNCHANGED.

        For ``mirror`` and ``replace`` the batch's keys are also remembered as seen in this run."""
        changes = np.zeros(batch.num_rows, dtype=np.int8)
        data = pa.table(
            {"ord": pa.array(np.arange(batch.num_rows, dtype=np.int32)), "k": batch[KEY], "f": batch[FINGERPRINT]}
        )
        with self.conn.cursor() as cur:
            cur.execute("truncate _rt_batch")
            copy_arrow(cur, "_rt_batch", ["ord", "row_key", "fingerprint"], data)
            cur.execute("analyze _rt_batch")  # temp tables get no autovacuum: without stats the joins go quadratic
            if self.track_seen:
                cur.execute("insert into _rt_seen select row_key from _rt_batch on conflict do nothing")
            cur.execute(
                f"""select b.ord, s.fingerprint is null
                    from _rt_batch b
                    left join {self.rows_table} s on s.sync = %s and s.row_key = b.row_key
                    where s.fingerprint is distinct from b.fingerprint""",
                (self.sync,),
            )
            for ord_, is_new in cur:
                changes[ord_] = NEW if is_new else CHANGED
        return changes

    def remember(self, changes: np.ndarray) -> None:
        """After the current batch was written: store the fingerprints of its new and changed records."""
        changed = np.flatnonzero(changes != UNCHANGED)
        if self.dry_run or not len(changed):
            return
        self.conn.execute(
            f"""insert into {self.rows_table} (sync, row_key, fingerprint)
                select %s, row_key, fingerprint from _rt_batch where ord = any(%s)
                on conflict (sync, row_key) do update set fingerprint = excluded.fingerprint""",
            (self.sync, changed.tolist()),
        )

    # ---------------------------------------------------------------- rejected rows

    def reject(self, batch: pa.RecordBatch, keep_key: bool) -> None:
        """Keep rejected rows where users can query them; with ``keep_key`` their (non-NULL)
        keys count as seen, so ``mirror`` does not delete what was written for them before."""
        with self.conn.cursor() as cur:
            if keep_key:
                seen = batch.select([KEY]).filter(pc.is_valid(batch[KEY]))
                if seen.num_rows:
                    cur.execute("create temp table if not exists _rt_rejected_keys (row_key jsonb) on commit drop")
                    cur.execute("truncate _rt_rejected_keys")
                    copy_arrow(cur, "_rt_rejected_keys", ["row_key"], seen)
                    cur.execute("insert into _rt_seen select row_key from _rt_rejected_keys on conflict do nothing")
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

    GONE = "from {rows} s where s.sync = %s and not exists (select 1 from _rt_seen n where n.row_key = s.row_key)"

    def gone_count(self) -> int:
        row = self.conn.execute(f"select count(*) {self.GONE.format(rows=self.rows_table)}", (self.sync,)).fetchone()
        return int(row[0]) if row else 0

    def gone_sample(self, limit: int) -> list[Any]:
        query = f"select s.row_key {self.GONE.format(rows=self.rows_table)} order by s.row_key limit {int(limit)}"
        return [r[0] for r in self.conn.execute(query, (self.sync,))]

    def gone_keys_cte(self) -> str:
        """A data-modifying CTE ``gone(row_key)`` that forgets the gone records (parameter: sync)."""
        return f"gone as (delete {self.GONE.format(rows=self.rows_table)} returning s.row_key)"

    def iter_gone(self, size: int) -> Any:
        """The gone records' keys, ``size`` at a time (server-side cursor: bounded memory)."""
        with self.conn.cursor(name="rt_gone") as cur:
            cur.execute(f"select s.row_key {self.GONE.format(rows=self.rows_table)}", (self.sync,))
            while rows := cur.fetchmany(size):
                yield [r[0] for r in rows]

    def forget_gone(self) -> int:
        if self.dry_run:
            return self.gone_count()
        cur = self.conn.execute(f"delete {self.GONE.format(rows=self.rows_table)}", (self.sync,))
        return cur.rowcount

    # ---------------------------------------------------------------- replace: refreshes owed

    def pending_refresh(self) -> list[str]:
        if self.rows_table != f"{SCHEMA}.sync_rows":
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
