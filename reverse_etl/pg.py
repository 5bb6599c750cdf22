"""A Postgres reached through the run's own DuckDB (its postgres extension): the sync state's
Postgres, and a Postgres destination.

Every write of an attempt to that Postgres (the destination's rows when the destination is
there, the state, rejected rows, the run's record) goes through one DuckDB transaction on the
attached database, so it commits or rolls back as one Postgres transaction; rows travel
DuckDB → Postgres by binary COPY, without passing through Python. SQL that DuckDB cannot
express (DDL, ``INSERT ... ON CONFLICT``, ``RETURNING``) runs with ``postgres_execute`` in the
same transaction, and reads with ``postgres_query``.

This is the edge of DuckDB's postgres extension: every error it raises leaves as a classified
``SyncError`` (``errors.from_postgres_extension``). Names in Postgres SQL are spelled by
``pg_ident``, in DuckDB SQL by ``duck_ident``: never by hand.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

from reverse_etl.errors import from_postgres_extension
from roundtrip.core.sql import duck_ident, literal

log = logging.getLogger(__name__)


def with_application_name(url: str, name: str) -> str:
    """The libpq URL with ``application_name`` set (it shows the sync in pg_stat_activity)."""
    parts = urlparse(url)
    query = dict(parse_qsl(parts.query))
    query["application_name"] = name[:63]
    return urlunparse(parts._replace(query=urlencode(query)))


class PgSession:
    """One Postgres attached to the run's DuckDB connection ``con`` as ``alias``."""

    def __init__(
        self, con: Any, url: str, alias: str, application: str, what: str, read_only: bool = False,
        own_connection: bool = False,
    ) -> None:  # fmt: skip
        self.con = con
        self.alias = alias
        self.read_only = read_only
        self.own_connection = own_connection  # ``con`` is this session's alone: closed on detach
        self.in_transaction = False
        self.what = what  # who is asking, in error messages ("sync crm_segments")
        target = with_application_name(url, application)
        mode = ", read_only" if read_only else ""
        self._run(lambda: con.execute("load postgres"))
        self._run(lambda: con.execute(f"attach {literal(target)} as {duck_ident(alias)} (type postgres{mode})"))

    def _run(self, call: Any) -> Any:
        try:
            return call()
        except Exception as exc:
            raise from_postgres_extension(exc, self.what) from exc

    def table(self, schema: str, table: str) -> str:
        """A Postgres table as DuckDB SQL names it (for the scanner and binary COPY)."""
        return duck_ident(self.alias, schema, table)

    def execute(self, sql: str) -> None:
        """Run Postgres ``sql`` as it is (inside the run's transaction, if one is open)."""
        self._run(lambda: self.con.execute(f"call postgres_execute({literal(self.alias)}, {literal(sql)})"))

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of a read-only Postgres ``sql`` (it sees the transaction's own writes)."""
        rows: list[tuple[Any, ...]] = self._run(
            lambda: self.con.execute(f"select * from postgres_query({literal(self.alias)}, {literal(sql)})").fetchall()
        )
        return rows

    def query_relation(self, sql: str) -> str:
        """A read-only Postgres ``sql`` as a DuckDB table function, to select from in DuckDB SQL."""
        return f"postgres_query({literal(self.alias)}, {literal(sql)})"

    def duck(self, sql: str) -> Any:
        """DuckDB ``sql`` that reads or writes this Postgres' tables (binary COPY, the scanner)."""
        return self._run(lambda: self.con.execute(sql))

    def scalar(self, sql: str) -> Any:
        rows = self.query(sql)
        return rows[0][0] if rows else None

    def exists(self, schema: str, table: str) -> bool:
        from roundtrip.core.sql import pg_ident

        return bool(self.scalar(f"select to_regclass({literal(pg_ident(schema, table))}) is not null"))

    def refresh_catalog(self) -> None:
        """Forget what DuckDB knows of the remote schema (after DDL of our own)."""
        self._run(lambda: self.con.execute("call pg_clear_cache()"))

    def begin(self) -> None:
        self._run(lambda: self.con.execute("begin transaction"))
        self.in_transaction = True
        # DuckDB opens its Postgres transactions REPEATABLE READ; a sync wants READ COMMITTED (two
        # runs feeding one queue: ON CONFLICT DO NOTHING sees the other's committed rows instead
        # of failing to serialize). Allowed as the transaction's first statement.
        self.execute("set transaction isolation level read committed")

    def commit(self) -> None:
        self._run(lambda: self.con.execute("commit"))
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
            self.con.execute(f"detach {duck_ident(self.alias)}")
        except Exception as exc:
            log.debug("detach failed: %s", exc)
        if self.own_connection:
            self.con.close()
