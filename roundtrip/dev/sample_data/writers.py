"""Write the sample data where the apps keep it: SQLite, Postgres, landing files."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

FORMATS = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}
_SQLITE_TYPES = {pa.int64(): "INTEGER", pa.float64(): "REAL", pa.string(): "TEXT"}


def write_users_sqlite(path: Path, users: pa.Table) -> int:
    """The app database: one ``users`` table, SQLite types as the app declares them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    columns = ", ".join(
        f'"{f.name}" {_SQLITE_TYPES[f.type]}' + (" PRIMARY KEY" if f.name == "user_id" else "") for f in users.schema
    )
    with sqlite3.connect(path) as con:
        con.execute(f"create table users ({columns})")
        marks = ", ".join("?" * users.num_columns)
        for batch in users.to_batches(100_000):
            con.executemany(f"insert into users values ({marks})", zip(*(c.to_pylist() for c in batch.columns)))
    return users.num_rows


def write_items_postgres(conninfo: str, items: pa.Table) -> int:
    """The catalog app's database: ``catalog.items``, replaced as a whole."""
    import psycopg

    with psycopg.connect(conninfo) as conn:
        conn.execute("create schema if not exists catalog")
        conn.execute("drop table if exists catalog.items")
        conn.execute(
            """create table catalog.items (
                item_id bigint primary key,
                title text not null,
                category text not null,
                price numeric(10, 2) not null,
                stock integer not null,
                is_active boolean not null,
                is_adult boolean not null,
                created_at timestamptz not null,
                updated_at timestamptz not null
            )"""
        )
        with conn.cursor().copy(
            "copy catalog.items (item_id, title, category, price, stock, is_active, is_adult, created_at, updated_at) from stdin"
        ) as copy:
            for row in zip(*(c.to_pylist() for c in items.columns)):
                copy.write_row(row)
    return items.num_rows


def write_events(landing: Path, stream: str, chunks: Iterable[pa.Table], fmt: str = "jsonl") -> dict[str, int]:
    """Files under ``landing/<stream>/dt=YYYY-MM-DD/<stream>-<chunk>.<ext>``, one per chunk and day.

    Returns rows per file name. The stream's folder is replaced as a whole so that a smaller
    re-generation leaves no stale files behind.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}")
    root = landing / stream
    shutil.rmtree(root, ignore_errors=True)
    written: dict[str, int] = {}
    for chunk_no, table in enumerate(chunks):
        for day in sorted(pc.unique(table.column("dt")).to_pylist()):
            part = table.filter(pc.equal(table.column("dt"), day)).drop_columns(["dt"])
            folder = root / f"dt={day}"
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{stream}-{chunk_no:05d}.{FORMATS[fmt]}"
            _write_file(part, target, fmt)
            written[str(target)] = part.num_rows
    return written


def _write_file(table: pa.Table, target: Path, fmt: str) -> None:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, target, compression="snappy")
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, target)
    else:
        import duckdb

        con = duckdb.connect()
        try:
            con.register("part", table)
            # insertion order is kept, so the file is byte-for-byte reproducible
            con.execute(f"copy part to '{target}' (format json)")
        finally:
            con.close()
