"""The DuckDB warehouse file: the model's columns copied into the run's scratch database, and the
file released at once.

A sync never holds the warehouse while it writes: the file is attached read-only only for the
copy (DuckDB reads a few million rows a second), then detached, so a `dbt build` started during
the sync's writes finds the file free. A file that a `dbt build` holds is waited for
(``--wait SECONDS``), then reported as a transient error, which the run's retries try again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from reverse_etl.errors import SyncError, from_duckdb
from reverse_etl.sources.base import Since
from reverse_etl.spec import ModelRef
from roundtrip.core.duckdb_extensions import is_lock_error, lock_holder
from roundtrip.core.sql import duck_ident, literal

log = logging.getLogger(__name__)


class DuckDBSource:
    name = "duckdb"

    def __init__(self, path: Path, wait: float = 0) -> None:
        self.path = path
        self.wait = wait  # seconds to wait for a file another process (a `dbt build`) holds

    def relation(
        self, con: Any, scratch: str, model: ModelRef, columns: list[str] | None, since: Since | None = None
    ) -> str:
        if not self.path.exists():
            raise SyncError(f"warehouse {self.path} not found", hint="run the loaders and `dbt build` first")
        alias = f"{scratch}_warehouse"
        self._attach(con, alias)
        copy = duck_ident(scratch, "model")
        selected = ", ".join(duck_ident(c) for c in columns) if columns else "*"
        try:
            con.execute(
                f"create or replace table {copy} as select {selected} "
                f"from {duck_ident(alias, model.schema_, model.identifier)}"
                + (f" where {since.duckdb()}" if since else "")
            )
        except Exception as exc:
            raise from_duckdb(exc, f"model {model.identifier} ({self.describe(model)})") from exc
        finally:
            con.execute(f"detach {duck_ident(alias)}")  # the warehouse is free again
        return copy

    def _attach(self, con: Any, alias: str) -> None:
        import duckdb

        deadline = time.monotonic() + self.wait
        while True:
            try:
                con.execute(f"attach {literal(str(self.path))} as {duck_ident(alias)} (read_only)")
                return
            except duckdb.Error as exc:
                if not is_lock_error(exc) or time.monotonic() >= deadline:
                    raise from_duckdb(exc, f"warehouse {self.path}") from exc
                log.info("warehouse %s is in use by %s; waiting", self.path, lock_holder(str(exc)) or "another process")
                time.sleep(0.5)

    def describe(self, model: ModelRef) -> str:
        return f"{self.path} {model.schema_}.{model.identifier}"
