"""``reverse_etl.syncs``: one row per sync, where its state is and how far it has come.

- ``rows_table`` / ``doubt_table``: its log and its write-ahead marks (names derived from the
  sync's name, whatever its length or characters);
- ``identity``: the identity columns and their Postgres types;
- ``version``: bumped by every commit that changes the state; it orders the log and stamps the
  local cache;
- ``epoch``: one history of the state; a state rebuilt (from its log, or from the destination)
  gets a new one, so that no cache of an older history is trusted;
- ``live`` / ``logged``: records owned, rows in the log (when to rewrite the log);
- ``digest``: what the destination said it held after the last commit (``Destination.digest``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, replace
from typing import Any

from reverse_etl.pg import PgSession
from reverse_etl.state.schema import SCHEMA
from roundtrip.core.sql import literal, pg_ident


def tables_of(sync: str) -> tuple[str, str]:
    """(log table, doubt table) of a sync: names derived from its name, whatever its length."""
    digest = hashlib.sha1(sync.encode()).hexdigest()[:16]
    return f"rows_{digest}", f"doubt_{digest}"


def new_epoch() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class SyncRow:
    sync: str
    rows_table: str
    doubt_table: str
    identity: list[tuple[str, str]]  # (column, Postgres type)
    version: int
    live: int
    logged: int
    epoch: str
    digest: str | None
    cursor: str | None = None  # change_detection cursor: "TYPE|value", the highest value read
    since_full: int = 0  # runs since the last one that read every row (change_detection cursor)


def read(pg: PgSession, sync: str) -> SyncRow | None:
    rows = pg.query(
        f"""select rows_table, doubt_table, identity::text, version, live, logged, epoch, digest, cursor, since_full
            from {SCHEMA}.syncs where sync = {literal(sync)}"""
    )
    if not rows:
        return None
    r = rows[0]
    identity = [(str(name), str(kind)) for name, kind in json.loads(r[2])]
    return SyncRow(sync, r[0], r[1], identity, int(r[3]), int(r[4]), int(r[5]), r[6] or "", r[7], r[8], int(r[9] or 0))


def write(pg: PgSession, row: SyncRow) -> None:
    """Insert or replace the sync's row (in the caller's transaction)."""
    pg.execute(
        f"""insert into {SCHEMA}.syncs
                (sync, rows_table, doubt_table, identity, version, live, logged, epoch, digest, cursor, since_full)
            values ({literal(row.sync)}, {literal(row.rows_table)}, {literal(row.doubt_table)},
                    {literal(json.dumps(row.identity))}::jsonb, {int(row.version)}, {int(row.live)},
                    {int(row.logged)}, {literal(row.epoch)}, {literal(row.digest) if row.digest else "null"},
                    {literal(row.cursor) if row.cursor else "null"}, {int(row.since_full)})
            on conflict (sync) do update set rows_table = excluded.rows_table, doubt_table = excluded.doubt_table,
                identity = excluded.identity, version = excluded.version, live = excluded.live,
                logged = excluded.logged, epoch = excluded.epoch, digest = excluded.digest,
                cursor = excluded.cursor, since_full = excluded.since_full"""
    )


def committed(row: SyncRow, live: int, logged: int, digest: str | None) -> SyncRow:
    """The row after a commit that changed the state (or only the destination's digest)."""
    return replace(row, version=row.version + 1, live=live, logged=logged, digest=digest)


def fresh(sync: str, identity: list[tuple[str, str]]) -> SyncRow:
    rows_table, doubt_table = tables_of(sync)
    return SyncRow(sync, rows_table, doubt_table, identity, 0, 0, 0, new_epoch(), None)


def forget(conn: Any, sync: str) -> None:
    """Drop everything the state knows of ``sync`` (psycopg connection; tests and benchmarks)."""
    rows_table, doubt_table = tables_of(sync)
    if conn.execute(f"select to_regclass('{SCHEMA}.syncs') is not null").fetchone()[0]:
        conn.execute(f"drop table if exists {pg_ident(SCHEMA, rows_table)}")
        conn.execute(f"drop table if exists {pg_ident(SCHEMA, doubt_table)}")
        conn.execute(f"delete from {SCHEMA}.syncs where sync = %s", (sync,))
        conn.execute(f"delete from {SCHEMA}.sync_schemas where sync = %s", (sync,))
