"""``reverse_etl.rows_<id>``: one sync's state as an append-only log.

Each commit appends what it changed, stamped with the sync's new ``version``: the records sent
(new, changed, healed) with their fingerprint, and a tombstone (``fingerprint`` NULL) for each
record gone. The current state is the last entry per identity; the identities whose last entry
is a tombstone are the records this sync wrote and then deleted (``retired``). Appending costs
what the run changed, never what it did not; once the log holds ``REWRITE_FACTOR`` times the
live records it is rewritten whole (the current state, and the tombstones kept).
"""

from __future__ import annotations

from typing import Any

from reverse_etl.pg import PgSession
from reverse_etl.records import q
from reverse_etl.state.schema import SCHEMA
from roundtrip.core.sql import pg_ident

REWRITE_FACTOR = 2  # the log is rewritten when it holds this many times the live records


class StateLog:
    def __init__(self, pg: PgSession, table: str, identity: list[str]) -> None:
        self.pg = pg
        self.table = table
        self.identity = identity
        self.remote = pg.table(SCHEMA, table)  # DuckDB SQL
        self.relation = pg_ident(SCHEMA, table)  # Postgres SQL

    def ids(self, prefix: str = "") -> str:
        return ", ".join(f"{prefix}{q(c)}" for c in self.identity)

    def exists(self) -> bool:
        return self.pg.exists(SCHEMA, self.table)

    def create(self, identity: list[tuple[str, str]]) -> None:
        columns = ", ".join(f"{pg_ident(c)} {kind}" for c, kind in identity)
        self.pg.execute(
            f"create table if not exists {self.relation} ({columns}, fingerprint bigint, seq bigint not null)"
        )
        self.pg.refresh_catalog()

    def columns(self) -> list[str]:
        rows = self.pg.query(
            f"""select attname::text from pg_attribute where attrelid = to_regclass({_lit(self.relation)})
                and attnum > 0 and not attisdropped order by attnum"""
        )
        return [r[0] for r in rows]

    def _latest(self) -> str:
        return f"""select {self.ids()}, arg_max(struct_pack(f := fingerprint), seq).f as fingerprint
                   from {self.remote} group by all"""

    def current_sql(self) -> str:
        """Identity and fingerprint of every record the log says the destination holds."""
        return f"select * from ({self._latest()}) where fingerprint is not null"

    def retired_sql(self) -> str:
        """The identities this sync wrote and then deleted."""
        return f"select {self.ids()} from ({self._latest()}) where fingerprint is null"

    def top(self) -> int:
        """The highest version in the log."""
        return int(self.pg.scalar(f"select coalesce(max(seq), 0) from {self.relation}") or 0)

    def extent(self) -> tuple[int, int]:
        """(highest version in it, rows): what the sync's row says they are, unless a person
        or a tool emptied, trimmed or added to the log."""
        row = self.pg.query(f"select coalesce(max(seq), 0), count(*) from {self.relation}")
        return int(row[0][0]), int(row[0][1])

    def summary(self) -> tuple[int, int, int]:
        """(highest version in it, records it says are live, rows): to rebuild the sync's row."""
        rows = self.pg.query(f"""select coalesce(max(seq), 0), count(*) from {self.relation}""")
        top, logged = int(rows[0][0]), int(rows[0][1])
        live = self.pg.query(
            f"""select count(*) from (select distinct on ({self._pg_ids()}) fingerprint from {self.relation}
                order by {self._pg_ids()}, seq desc) s where fingerprint is not null"""
        )
        return top, int(live[0][0]), logged

    def _pg_ids(self) -> str:
        return ", ".join(pg_ident(c) for c in self.identity)

    def append(self, con: Any, version: int, sent: str, gone: str | None) -> None:
        """``sent`` (identity, fingerprint) and tombstones for ``gone`` (identities), as DuckDB queries."""
        con.execute(f"insert into {self.remote} select *, {int(version)} from ({sent})")
        if gone:
            con.execute(f"insert into {self.remote} select {self.ids()}, null::bigint, {int(version)} from ({gone})")

    def rewrite(self, con: Any, version: int, state: str, retired: str | None) -> None:
        """The log replaced by ``state`` (identity, fingerprint) and tombstones for ``retired``."""
        self.pg.execute(f"truncate {self.relation}")
        self.append(con, version, state, retired)


def _lit(text: str) -> str:
    from roundtrip.core.sql import literal

    return literal(text)
