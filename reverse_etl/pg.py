"""The sync state's Postgres, reached through the run's own DuckDB (its postgres extension).

Every write of an attempt to that Postgres (the destination's rows when the destination is
Postgres, the state, rejected rows, the run's record) goes through one DuckDB transaction on
the attached database, so it commits or rolls back as one Postgres transaction; rows travel
DuckDB → Postgres by binary COPY, without passing through Python. SQL that DuckDB cannot
express (DDL, ``INSERT ... ON CONFLICT``, ``RETURNING``) runs with ``postgres_execute`` in the
same transaction, and reads with ``postgres_query``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

from roundtrip.core.sql import literal

log = logging.getLogger(__name__)
ALIAS = "rt_pg"


def with_application_name(url: str, name: str) -> str:
    """The libpq URL with ``application_name`` set (it shows the sync in pg_stat_activity)."""
    parts = urlparse(url)
    query = dict(parse_qsl(parts.query))
    query["application_name"] = name[:63]
    return urlunparse(parts._replace(query=urlencode(query)))


class Postgres:
    """The attached state database of one run (``rt_pg`` in the run's DuckDB)."""

    def __init__(self, con: Any, url: str, sync: str, read_only: bool = False) -> None:
        self.con = con
        self.read_only = read_only
        self.in_transaction = False
        con.execute("load postgres")
        mode = ", read_only" if read_only else ""
        target = with_application_name(url, f"reverse_etl:{sync}")
        con.execute(f"attach {literal(target)} as {ALIAS} (type postgres{mode})")

    def relation(self, schema: str, table: str) -> str:
        """A Postgres table as DuckDB names it."""
        return f'{ALIAS}."{schema}"."{table}"'

    def execute(self, sql: str) -> None:
        """Run ``sql`` on Postgres as it is (inside the run's transaction, if one is open)."""
        self.con.execute(f"call postgres_execute({literal(ALIAS)}, {literal(sql)})")

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of a read-only ``sql`` run on Postgres (sees the transaction's own writes)."""
        return self.con.execute(f"select * from postgres_query({literal(ALIAS)}, {literal(sql)})").fetchall()

    def scalar(self, sql: str) -> Any:
        rows = self.query(sql)
        return rows[0][0] if rows else None

    def refresh_catalog(self) -> None:
        """Forget what DuckDB knows of the remote schema (after DDL of our own)."""
        self.con.execute("call pg_clear_cache()")

    def begin(self) -> None:
        self.con.execute("begin transaction")
        self.in_transaction = True
        # DuckDB opens its Postgres transactions REPEATABLE READ; a sync wants READ COMMITTED (two
        # runs feeding one queue: ON CONFLICT DO NOTHING sees the other's committed rows instead
        # of failing to serialize). Allowed as the transaction's first statement.
        self.execute("set transaction isolation level read committed")

    def commit(self) -> None:
        self.con.execute("commit")
        self.in_transaction = False

    def rollback(self) -> None:
        if self.in_transaction:
            self.in_transaction = False
            try:
                self.con.execute("rollback")
            except Exception as exc:  # the server is gone: nothing was committed anyway
                log.debug("rollback failed: %s", exc)

    def detach(self) -> None:
        self.rollback()
        try:
            self.con.execute(f"detach {ALIAS}")
        except Exception as exc:
            log.debug("detach failed: %s", exc)
