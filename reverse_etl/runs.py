"""The run history (``reverse_etl.runs``) and the per-sync lock, on a connection of their own.

The lock is a session-level Postgres advisory lock keyed by the sync's name: two runs of one
sync never overlap, and if a run's process dies, the server releases its lock with the
connection (a run started at once waits a moment for that). The history is what users read
(``roundtrip sync status``); nothing the sync does depends on it: a truncated or dropped ``runs`` table is recreated and loses only history.

A run's row is written when it starts, its attempts counted as they happen, and its end
recorded in the same transaction as its writes (``committed`` when serving models are still to
refresh), so a run killed after its commit is on record with what it wrote. An end that cannot
be recorded because the state's Postgres is unreachable is kept in a local outbox
(``$ROUNDTRIP_DATA_DIR/reverse_etl/outbox.jsonl``) and written by the next run that reaches
it: the history never shows a run as ``running`` or ``abandoned`` when it ended with a result.
Messages stored in ``error`` are redacted.

This module is the psycopg edge of the history: its errors leave it classified.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from reverse_etl.counts import FIELDS as COUNTS
from reverse_etl.counts import SyncCounts
from reverse_etl.errors import SyncLockedError, from_psycopg
from roundtrip.core.redact import redact
from roundtrip.core.sql import literal

log = logging.getLogger(__name__)

SCHEMA = "reverse_etl"
LOCK_GRACE_SECONDS = 3.0  # how long a run waits for its sync's lock before it says "already running"
RUNNING, COMMITTED, SUCCEEDED, WITH_REJECTS, FAILED, BLOCKED, ABANDONED = (
    "running",
    "committed",  # written and committed; the serving refresh is still to come
    "succeeded",
    "succeeded_with_rejects",
    "failed",
    "blocked",  # a guard (max_delete_pct, max_reject_pct) stopped it before it wrote anything
    "abandoned",  # the process died before its commit, and left no result
)
RUNS_DDL = f"""
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
alter table {SCHEMA}.runs add column if not exists checked bigint;
alter table {SCHEMA}.runs add column if not exists notes text;
alter table {SCHEMA}.runs add column if not exists skipped bigint;
create index if not exists runs_by_sync on {SCHEMA}.runs (sync, run_id desc);
create or replace view {SCHEMA}.latest_runs as
    select distinct on (sync) * from {SCHEMA}.runs order by sync, run_id desc;
"""


def lock_key_sql(param: str = "%s") -> str:
    return f"hashtextextended('reverse_etl:sync:' || {param}, 0)"


def connect(url: str, application: str, autocommit: bool = True) -> Any:
    """A psycopg connection (``application`` shows in pg_stat_activity); errors classified."""
    import psycopg

    try:
        return psycopg.connect(url, autocommit=autocommit, application_name=application[:63], connect_timeout=10)
    except psycopg.Error as exc:
        who = application.removeprefix("reverse_etl:")
        raise from_psycopg(exc, f"sync {who}: the state's Postgres") from exc


@contextmanager
def psycopg_edge(what: str) -> Iterator[None]:
    """Classify the psycopg errors of a block."""
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        raise from_psycopg(exc, what) from exc


@dataclass(frozen=True)
class RunEnd:
    """How a run ended, as the history records it. ``run_id`` None: a run that never reached
    the history (its Postgres was down from the start): its row is inserted whole
    (``sync``, ``mode`` and ``destination`` then say whose)."""

    run_id: int | None
    status: str
    counts: SyncCounts | None
    error: str | None = None
    attempts: int | None = None
    notes: str | None = None
    sync: str | None = None
    mode: str | None = None
    destination: str | None = None

    def sql(self) -> str:
        """One statement with its values inlined (it also runs through DuckDB's postgres_execute)."""
        values = self.counts.as_dict() if self.counts else {}
        fields = {c: str(int(values[c])) if c in values else "null" for c in COUNTS}
        fields["status"] = literal(self.status)
        fields["ended_at"] = "clock_timestamp()"
        fields["error"] = literal(redact(self.error)) if self.error else "null"
        if self.attempts is not None:
            fields["attempts"] = str(int(self.attempts))
        if self.notes is not None:
            fields["notes"] = literal(redact(self.notes))
        if self.run_id is None:
            fields |= {
                "sync": literal(self.sync or ""),
                "mode": literal(self.mode or ""),
                "destination": literal(self.destination or ""),
            }
            return f"insert into {SCHEMA}.runs ({', '.join(fields)}) values ({', '.join(fields.values())})"
        sets = ", ".join(f"{k} = {v}" for k, v in fields.items())
        return f"update {SCHEMA}.runs set {sets} where run_id = {int(self.run_id)}"


class RunHistory:
    """One sync's lock and its history rows; use as a context manager (the lock is held until
    it exits)."""

    def __init__(self, url: str, sync: str, mode: str, destination: str, outbox: Path | None = None) -> None:
        self.url = url
        self.sync = sync
        self.mode = mode
        self.destination = destination
        self.outbox = outbox
        self.conn: Any = None

    def __enter__(self) -> RunHistory:
        self.conn = connect(self.url, f"reverse_etl:{self.sync}")
        try:
            with psycopg_edge(f"sync {self.sync}: the run history"):
                from reverse_etl.state.schema import ensure_schema

                ensure_schema(self.conn)
                if not self._take_lock():
                    raise SyncLockedError(f"sync {self.sync} is already running ({self._running_since()}): skipped")
                self._flush_outbox()
        except BaseException:
            self.conn.close()
            raise
        return self

    def _take_lock(self) -> bool:
        """The sync's lock, waited for a moment: a run killed just now (``kill -9``) holds it
        until its backend has noticed the closed socket and exited, which a run started at once
        must not mistake for a run still going."""
        deadline = time.monotonic() + LOCK_GRACE_SECONDS
        while True:
            row = self.conn.execute(f"select pg_try_advisory_lock({lock_key_sql()})", (self.sync,)).fetchone()
            if row and row[0]:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        # released explicitly: a closed connection's backend releases it only once it has
        # exited, which the next run of the sync, started at once, may not wait for
        try:
            self.conn.execute(f"select pg_advisory_unlock({lock_key_sql()})", (self.sync,))
        except Exception as error:  # the connection is gone: so is the lock
            log.debug("sync %s: unlock failed (%s)", self.sync, error)
        finally:
            self.conn.close()

    def _running_since(self) -> str:
        row = self.conn.execute(
            f"select run_id, started_at from {SCHEMA}.runs where sync = %s and status = %s order by run_id desc limit 1",
            (self.sync, RUNNING),
        ).fetchone()
        return f"run {row[0]} started {row[1]:%Y-%m-%d %H:%M:%S %Z}" if row else "another process holds its lock"

    def start(self, run_id: int | None, attempt: int) -> int:
        """The run's row: created on its first attempt that reaches the history, its attempt
        count set on each. Holding the lock, any other ``running`` row of this sync belongs to a
        process that died."""
        with psycopg_edge(f"sync {self.sync}: the run history"):
            abandoned = self.conn.execute(
                f"""update {SCHEMA}.runs set status = %s, ended_at = clock_timestamp(),
                        error = coalesce(error, 'the run ended without recording a result (process killed?)')
                    where sync = %s and status = %s and run_id is distinct from %s""",
                (ABANDONED, self.sync, RUNNING, run_id),
            ).rowcount
            if abandoned:
                log.warning("sync %s: %d earlier run(s) had died midway, marked abandoned", self.sync, abandoned)
            if run_id is not None:
                updated = self.conn.execute(
                    f"update {SCHEMA}.runs set attempts = %s, status = %s, error = null where run_id = %s and sync = %s",
                    (attempt, RUNNING, run_id, self.sync),
                ).rowcount
                if updated:
                    return run_id
            row = self.conn.execute(
                f"""insert into {SCHEMA}.runs (sync, mode, destination, status, attempts)
                    values (%s, %s, %s, %s, %s) returning run_id""",
                (self.sync, self.mode, self.destination, RUNNING, attempt),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def finish(self, end: RunEnd) -> None:
        with psycopg_edge(f"sync {self.sync}: the run history"):
            self.conn.execute(end.sql())

    def _flush_outbox(self) -> None:
        """Write the ends that earlier runs could not (their Postgres was unreachable)."""
        for end in read_outbox(self.outbox, self.sync):
            self.conn.execute(end.sql())
        clear_outbox(self.outbox, self.sync)


def record_end(url: str | None, spec: Any, end: RunEnd, outbox: Path | None) -> None:
    """Best effort, on a fresh connection (the run's own may be what failed); kept in the outbox
    when Postgres cannot be reached, for the next run of ``spec`` to write."""
    if url is None:
        return
    if end.run_id is None:
        end = replace(end, sync=spec.name, mode=spec.mode, destination=spec.destination)
    try:
        conn = connect(url, f"reverse_etl:{spec.name}")
        with conn, psycopg_edge(f"sync {spec.name}: the run history"):
            from reverse_etl.state.schema import ensure_schema

            ensure_schema(conn)
            conn.execute(end.sql())
    except Exception as exc:
        log.warning(
            "sync %s: could not record the end of its run (%s); the next run records it", spec.name, redact(exc)
        )
        write_outbox(outbox, spec.name, end)


# ---------------------------------------------------------------- the local outbox


def write_outbox(outbox: Path | None, sync: str, end: RunEnd) -> None:
    if outbox is None:
        return
    outbox.parent.mkdir(parents=True, exist_ok=True)
    line = {
        "sync": sync,
        "run_id": end.run_id,
        "status": end.status,
        "counts": end.counts.as_dict() if end.counts else None,
        "error": redact(end.error) if end.error else None,
        "attempts": end.attempts,
        "notes": end.notes,
        "mode": end.mode,
        "destination": end.destination,
    }
    with outbox.open("a") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_outbox(outbox: Path | None, sync: str) -> list[RunEnd]:
    if outbox is None or not outbox.exists():
        return []
    ends = []
    for line in outbox.read_text().splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if item.get("sync") == sync:
            counts = SyncCounts(**item["counts"]) if item.get("counts") else None
            ends.append(
                RunEnd(
                    item["run_id"],
                    item["status"],
                    counts,
                    item.get("error"),
                    item.get("attempts"),
                    item.get("notes"),
                    sync,
                    item.get("mode"),
                    item.get("destination"),
                )
            )
    return ends


def clear_outbox(outbox: Path | None, sync: str) -> None:
    if outbox is None or not outbox.exists():
        return
    kept = [line for line in outbox.read_text().splitlines() if line and json.loads(line).get("sync") != sync]
    if kept:
        outbox.write_text("\n".join(kept) + "\n")
    else:
        outbox.unlink(missing_ok=True)


# ---------------------------------------------------------------- reading the history


@dataclass
class RunRecord:
    run_id: int
    sync: str
    mode: str
    destination: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    attempts: int
    counts: dict[str, int | None]
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        seconds = (self.ended_at - self.started_at).total_seconds() if self.ended_at else None
        return {
            "sync": self.sync,
            "run_id": self.run_id,
            "status": self.status,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "seconds": round(seconds, 3) if seconds is not None else None,
            "attempts": self.attempts,
            **self.counts,
            "error": self.error,
        }


def recent_runs(url: str, sync: str | None, limit: int) -> list[RunRecord]:
    """The last ``limit`` runs of ``sync``, or the latest run of every sync. A ``running`` row
    whose lock nobody holds belongs to a process that died: it is shown as abandoned."""
    conn = connect(url, "reverse_etl:status")
    with conn, psycopg_edge("the run history"):
        present = conn.execute(f"select to_regclass('{SCHEMA}.runs') is not null").fetchone()
        if not (present and present[0]):
            return []
        held = f"""exists (select 1 from pg_locks l where l.locktype = 'advisory' and l.granted and l.objsubid = 1
                     and ((l.classid::bigint << 32) | l.objid::bigint) = {lock_key_sql("r.sync")})"""
        where, params = ("where r.sync = %s", (sync,)) if sync else ("", ())
        source = (
            f"(select * from {SCHEMA}.runs r {where} order by r.run_id desc limit {int(limit)}) r"
            if sync
            else f"(select distinct on (sync) * from {SCHEMA}.runs order by sync, run_id desc) r"
        )
        counts = ", ".join(f"r.{c}" for c in COUNTS)
        rows = conn.execute(
            f"""select r.run_id, r.sync, r.mode, r.destination,
                    case when r.status = '{RUNNING}' and not {held} then '{ABANDONED}' else r.status end,
                    r.started_at, r.ended_at, r.attempts, {counts}, r.error
                from {source}
                order by {"r.run_id desc" if sync else "r.sync"}""",
            params,
        ).fetchall()
    n = len(COUNTS)
    return [
        RunRecord(
            run_id=r[0], sync=r[1], mode=r[2], destination=r[3], status=r[4], started_at=r[5], ended_at=r[6],
            attempts=r[7], counts=dict(zip(COUNTS, r[8 : 8 + n], strict=True)), error=r[8 + n],
        )
        for r in rows
    ]  # fmt: skip
