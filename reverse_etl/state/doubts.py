"""``reverse_etl.doubt_<id>``: the write-ahead of a destination outside the state's transaction.

Before the first write to such a destination (Redis), the identities the run is about to send
are committed here on a connection of their own; the commit that records what was written
clears them. A run killed in between leaves them: the next run reads those records' state as
unknown and sends them again (and, for mirror, a mark of an identity the state never recorded
counts as written by this sync, so it is deleted if the model no longer has it). A crash
therefore never leaves a wrong value behind a record the state calls unchanged.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from reverse_etl.pg import PgSession
from reverse_etl.runs import psycopg_edge
from reverse_etl.state.schema import SCHEMA
from roundtrip.core.read_ahead import read_ahead
from roundtrip.core.sql import pg_ident


def csv_bytes(table: pa.Table | pa.RecordBatch) -> bytes:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
    return buffer.getvalue()


def copy_batches(cur: Any, table: str, columns: list[str], batches: Iterable[pa.RecordBatch]) -> int:
    """One COPY of every batch into ``table`` (psycopg, CSV); returns the rows sent. A helper
    thread encodes the next batch while this one is sent."""
    rows = 0
    with cur.copy(f"copy {table} ({', '.join(columns)}) from stdin (format csv)") as copy:
        encoded = read_ahead(((b.num_rows, csv_bytes(b)) for b in batches), name="reverse_etl-csv")
        with contextlib.closing(encoded):
            for count, data in encoded:
                rows += count
                copy.write(data)
    return rows


class Doubts:
    def __init__(self, pg: PgSession, table: str, identity: list[str]) -> None:
        self.pg = pg
        self.table = table
        self.identity = identity
        self.relation = pg_ident(SCHEMA, table)
        self.remote = pg.table(SCHEMA, table)

    def exists(self) -> bool:
        return self.pg.exists(SCHEMA, self.table)

    def create(self, identity: list[tuple[str, str]], side: Any | None = None) -> None:
        """The table (on ``side``, a psycopg connection, when it must exist before the run's
        own transaction commits)."""
        columns = ", ".join(f"{pg_ident(c)} {kind}" for c, kind in identity)
        ddl = f"create table if not exists {self.relation} ({columns}, run_id bigint)"
        if side is not None:
            with psycopg_edge("the write-ahead marks"):
                side.execute(ddl)
        else:
            self.pg.execute(ddl)
        self.pg.refresh_catalog()

    def count(self) -> int:
        return int(self.pg.scalar(f"select count(*) from {self.relation}") or 0)

    def relation_in_duckdb(self) -> str:
        from reverse_etl.records import q

        ids = ", ".join(q(c) for c in self.identity)
        return f"(select distinct {ids} from {self.remote})"

    def mark(self, side: Any, run_id: int, batches: Iterable[pa.RecordBatch]) -> int:
        """Commit the identities of ``batches`` as in doubt, on ``side`` (psycopg, autocommit)."""
        run = pa.scalar(run_id, pa.int64())
        with psycopg_edge("the write-ahead marks"), side.cursor() as cur:
            return copy_batches(
                cur,
                self.relation,
                [*[pg_ident(c) for c in self.identity], "run_id"],
                (b.append_column("run_id", pa.repeat(run, b.num_rows)) for b in batches),
            )

    def clear(self) -> None:
        """In the run's transaction: every mark, of this run and of killed ones."""
        self.pg.execute(f"truncate {self.relation}")
