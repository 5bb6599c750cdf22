"""The DuckDB warehouse file, attached read-only and read in place (no copy)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from reverse_etl.errors import SyncError
from reverse_etl.spec import ModelRef
from roundtrip.core.duckdb_extensions import busy_error, is_lock_error, lock_holder
from roundtrip.core.sql import literal, quote

log = logging.getLogger(__name__)


class DuckDBSource:
    name = "duckdb"

    def __init__(self, path: Path, wait: float = 0) -> None:
        self.path = path
        self.wait = wait  # seconds to wait for a file another process (a `dbt build`) holds

    def relation(self, con: Any, scratch: str, model: ModelRef, columns: list[str] | None) -> str:
        if not self.path.exists():
            raise SyncError(f"warehouse {self.path} not found", hint="run the loaders and `dbt build` first")
        # attached under the catalog name dbt's relation uses, whatever the file is called now
        alias = model.database
        attached = {r[0] for r in con.execute("select database_name from duckdb_databases()").fetchall()}
        if alias not in attached:
            self._attach(con, alias)
        return f"{quote(alias)}.{quote(model.schema_)}.{quote(model.identifier)}"

    def _attach(self, con: Any, alias: str) -> None:
        import duckdb

        deadline = time.monotonic() + self.wait
        while True:
            try:
                con.execute(f"attach {literal(str(self.path))} as {quote(alias)} (read_only)")
                return
            except duckdb.IOException as exc:
                if not is_lock_error(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise busy_error(self.path, exc) from exc
                log.info("warehouse %s is in use by %s; waiting", self.path, lock_holder(str(exc)) or "another process")
                time.sleep(0.5)

    def describe(self, model: ModelRef) -> str:
        return f"{self.path} {model.schema_}.{model.identifier}"
