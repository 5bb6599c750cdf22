"""A Postgres warehouse (dbt's ``postgres`` target): the model's columns are copied into the
run's scratch DuckDB by DuckDB's postgres scanner (binary COPY, streamed, no Python rows)."""

from __future__ import annotations

import logging
from typing import Any

from reverse_etl.errors import TransientSyncError, from_postgres_extension
from reverse_etl.sources.base import Since
from reverse_etl.spec import ModelRef
from roundtrip.core.redact import redact
from roundtrip.core.sql import duck_ident, literal

log = logging.getLogger(__name__)
ALIAS = "rt_pg_warehouse"


class PostgresSource:
    name = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url

    def relation(
        self, con: Any, scratch: str, model: ModelRef, columns: list[str] | None, since: Since | None = None
    ) -> str:
        try:
            con.execute("load postgres")
            attached = {r[0] for r in con.execute("select database_name from duckdb_databases()").fetchall()}
            if ALIAS not in attached:
                con.execute(f"attach {literal(self.url)} as {ALIAS} (type postgres, read_only)")
            # dbt on Postgres cannot reach across databases: the relation is schema.table in ours
            remote = duck_ident(ALIAS, model.schema_, model.identifier)
            selected = ", ".join(duck_ident(c) for c in columns) if columns else "*"
            copy = duck_ident(scratch, "model")
            where = f" where {since.duckdb()}" if since else ""  # pushed down to Postgres by the scanner
            con.execute(f"create or replace table {copy} as select {selected} from {remote}{where}")
            # a dbt build swaps the model's table in (rename, rename, drop) while it is read: a
            # read that waited for the swap's lock can find the old table gone and copy nothing.
            # The rows copied must be the rows the relation holds now, else the run reads again
            copied = int(con.execute(f"select count(*) from {copy}").fetchone()[0])
            held = int(con.execute(f"select count(*) from {remote}{where}").fetchone()[0])
            con.execute(f"detach {ALIAS}")
        except Exception as exc:
            raise from_postgres_extension(exc, f"model {model.identifier} ({self.describe(model)})") from exc
        if copied != held:
            raise TransientSyncError(
                f"model {model.identifier} ({self.describe(model)}) changed while it was read ({copied:,} rows "
                f"read, {held:,} there now: a dbt build replaced it?)"
            )
        return copy

    def describe(self, model: ModelRef) -> str:
        return f"{redact(self.url)} {model.schema_}.{model.identifier}"
