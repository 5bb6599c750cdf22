"""The run's own DuckDB: where a sync's rows are copied, checked and classified.

An in-memory connection with a scratch database in a temporary folder (the copy of the model,
the classified records), memory capped and spilling to that folder, removed when the run ends.
Its ``shared`` in-memory database is seen by every cursor of the connection (a temp table is
not): a destination streams its writes on a cursor of its own while the connection runs the
state's transaction.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from reverse_etl.errors import from_duckdb
from roundtrip.core.sql import duck_ident, literal


class Scratch:
    """Use as a context manager; ``con`` is the run's DuckDB connection."""

    def __init__(self, memory_limit: str) -> None:
        self.memory_limit = memory_limit
        self.con: Any = None
        self.folder: Path | None = None
        # unique names: DuckDB shares one instance between the connections of a process
        self.db = f"rt_{uuid.uuid4().hex[:12]}"
        self.shared = f"{self.db}_mem"

    def __enter__(self) -> Scratch:
        from roundtrip.core.duckdb_extensions import connect

        self.folder = Path(tempfile.mkdtemp(prefix="reverse_etl-"))
        try:
            self.con = connect(":memory:")
            self.con.execute(f"set memory_limit = {literal(self.memory_limit)}")
            self.con.execute(f"set temp_directory = {literal(str(self.folder / 'spill'))}")
            self.con.execute("set preserve_insertion_order = false")  # nothing here depends on it
            self.con.execute(f"attach {literal(str(self.folder / 'run.duckdb'))} as {duck_ident(self.db)} (read_write)")
            self.con.execute(f"attach ':memory:' as {duck_ident(self.shared)}")
        except Exception as exc:
            self.close()
            raise from_duckdb(exc, "the run's scratch database") from exc
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def table(self, name: str) -> str:
        """A table of the run's scratch database (on disk, spills)."""
        return duck_ident(self.db, name)

    def shared_table(self, name: str) -> str:
        """A table every cursor of the run's connection sees (in memory)."""
        return duck_ident(self.shared, name)

    def close(self) -> None:
        if self.con is not None:
            with contextlib.suppress(Exception):
                self.con.close()
            self.con = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
