"""Run history and the per-sync lock, on a control connection of their own (autocommit).

The lock is a session-level Postgres advisory lock keyed by the sync's name: two runs of one
sync never overlap, and if a run's process dies, the server releases its lock with the
connection. The history row of such a run stays ``running`` until the next run of the sync
marks it ``abandoned``; ``status`` shows it as abandoned as soon as nobody holds the lock.

The write and the refresh are separate phases: the run's commit records its status and counts
in the same transaction as its writes (``committed`` when serving models are still to refresh),
so a run killed after its commit is on record with what it wrote, never ``abandoned``.
Messages stored in ``error`` are redacted (no credentials).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reverse_etl.counts import SyncCounts
from reverse_etl.errors import SyncLockedError
from reverse_etl.spec import SyncSpec
from reverse_etl.state import SCHEMA, ensure_state_schema, state_schema_exists
from roundtrip.core.redact import redact

log = logging.getLogger(__name__)

RUNNING, COMMITTED, SUCCEEDED, WITH_REJECTS, FAILED, BLOCKED, ABANDONED = (
    "running",
    "committed",  # written and committed; the serving refresh is still to come
    "succeeded",
    "succeeded_with_rejects",
    "failed",
    "blocked",  # a guard (max_delete_pct, max_reject_pct) stopped it before it wrote anything
    "abandoned",
)
COUNTS = ("read", "inserted", "updated", "unchanged", "healed", "deleted", "rejected")


def lock_key_sql(param: str = "%s") -> str:
    return f"hashtextextended('reverse_etl:sync:' || {param}, 0)"


def connect(url: str, sync: str, autocommit: bool) -> Any:
    import psycopg

    # application_name shows the sync in pg_stat_activity
    return psycopg.connect(url, autocommit=autocommit, application_name=f"reverse_etl:{sync}"[:63], connect_timeout=10)


class RunLog:
    """Holds one sync's lock and writes its history row; use as a context manager."""

    def __init__(self, url: str, spec: SyncSpec) -> None:
        self.url = url
        self.spec = spec
        self.conn: Any = None

    def __enter__(self) -> RunLog:
        self.conn = connect(self.url, self.spec.name, autocommit=True)
        try:
            ensure_state_schema(self.conn)
            row = self.conn.execute(f"select pg_try_advisory_lock({lock_key_sql()})", (self.spec.name,)).fetchone()
            if not (row and row[0]):
                raise SyncLockedError(f"sync {self.spec.name} is already running ({self._running_since()}): skipped")
        except BaseException:
            self.conn.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()  # releases the advisory lock

    def _running_since(self) -> str:
        row = self.conn.execute(
            f"select run_id, started_at from {SCHEMA}.runs where sync = %s and status = %s order by run_id desc limit 1",
            (self.spec.name, RUNNING),
        ).fetchone()
        return f"run {row[0]} started {row[1]:%Y-%m-%d %H:%M:%S %Z}" if row else "another process holds its lock"

    def start(self, run_id: int | None, attempt: int) -> int:
        """The run's history row: created on the first attempt, its attempt count bumped after.

        Holding the lock, any other `running` row of this sync belongs to a process that died."""
        abandoned = self.conn.execute(
            f"""update {SCHEMA}.runs set status = %s, ended_at = clock_timestamp(),
                    error = coalesce(error, 'the run ended without recording a result (process killed?)')
                where sync = %s and status = %s and run_id is distinct from %s""",
            (ABANDONED, self.spec.name, RUNNING, run_id),
        ).rowcount
        if abandoned:
            log.warning("sync %s: %d earlier run(s) had died midway, marked abandoned", self.spec.name, abandoned)
        if run_id is None:
            row = self.conn.execute(
                f"""insert into {SCHEMA}.runs (sync, mode, destination, status)
                    values (%s, %s, %s, %s) returning run_id""",
                (self.spec.name, self.spec.mode, self.spec.destination, RUNNING),
            ).fetchone()
            assert row is not None
            return int(row[0])
        self.conn.execute(
            f"update {SCHEMA}.runs set attempts = %s, status = %s, error = null where run_id = %s",
            (attempt, RUNNING, run_id),
        )
        return run_id

    def finish(self, run_id: int, status: str, counts: SyncCounts | None, error: str | None = None) -> None:
        record_end(self.conn, run_id, status, counts, error)


def record_end(conn: Any, run_id: int, status: str, counts: SyncCounts | None, error: str | None) -> None:
    values = counts.as_dict() if counts else {}
    conn.execute(
        f"""update {SCHEMA}.runs set status = %(status)s, ended_at = clock_timestamp(), error = %(error)s,
                {", ".join(f"{c} = %({c})s" for c in COUNTS)}
            where run_id = %(run_id)s""",
        {"status": status, "error": redact(error) if error else None, "run_id": run_id}
        | {k: values.get(k) for k in COUNTS},
    )


def record_end_sql(run_id: int, status: str, counts: SyncCounts | None, error: str | None) -> str:
    """``record_end`` as one statement with its values inlined (for ``postgres_execute``)."""
    from roundtrip.core.sql import literal

    values = counts.as_dict() if counts else {}
    sets = ", ".join(f"{c} = {int(values[c]) if c in values else 'null'}" for c in COUNTS)
    message = literal(redact(error)) if error else "null"
    return f"""update {SCHEMA}.runs set status = {literal(status)}, ended_at = clock_timestamp(), error = {message},
                   {sets} where run_id = {int(run_id)}"""


def record_failure(
    url: str, spec: SyncSpec, run_id: int, error: str, counts: SyncCounts | None = None, status: str = FAILED
) -> None:
    """Best effort, on a fresh connection: the run's own may be what failed. ``counts``: what
    had committed (None: nothing)."""
    try:
        with connect(url, spec.name, autocommit=True) as conn:
            record_end(conn, run_id, status, counts, error)
    except Exception as exc:
        log.warning("sync %s: could not record the failure of run %s: %s", spec.name, run_id, redact(exc))


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
    with connect(url, sync or "status", autocommit=True) as conn:
        if not state_schema_exists(conn):
            return []
        held = f"""exists (select 1 from pg_locks l where l.locktype = 'advisory' and l.granted and l.objsubid = 1
                     and ((l.classid::bigint << 32) | l.objid::bigint) = {lock_key_sql("r.sync")})"""
        where, params = ("where r.sync = %s", (sync,)) if sync else ("", ())
        source = (
            f"{SCHEMA}.runs r {where} order by r.run_id desc limit {int(limit)}"
            if sync
            else (f"{SCHEMA}.latest_runs r")
        )
        rows = conn.execute(
            f"""select r.run_id, r.sync, r.mode, r.destination,
                    case when r.status = '{RUNNING}' and not {held} then '{ABANDONED}' else r.status end,
                    r.started_at, r.ended_at, r.attempts,
                    r.read, r.inserted, r.updated, r.unchanged, r.healed, r.deleted, r.rejected, r.error
                from {source}
                {"" if sync else "order by r.sync"}""",
            params,
        ).fetchall()
    return [
        RunRecord(
            run_id=r[0], sync=r[1], mode=r[2], destination=r[3], status=r[4], started_at=r[5], ended_at=r[6],
            attempts=r[7], counts=dict(zip(COUNTS, r[8:15])), error=r[15],
        )
        for r in rows
    ]  # fmt: skip
