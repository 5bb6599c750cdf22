"""Loader faults found by a second adversarial sweep, from outside (`python -m loaders ...`
against servers of `make services`); each test is the minimal form of one attack and asserts on
what the warehouse holds afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg
import pytest

from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.dev.services import PostgresEndpoint

SQL_CONFIG = """
sql:
  cat:
    url: "{url}"
    source_schema: src
    reader: {reader}
    target_schema: raw_cat
    tables:
      - {{name: items, primary_key: [item_id], cursor: updated_at}}
"""


def _loaders(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loaders", *args, "--config", str(config)],
        cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _warehouse(data_dir: Path, query: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


@pytest.mark.postgres
@pytest.mark.parametrize("reader", ["sqlalchemy", "duckdb"])
def test_a_source_column_widened_to_decimals_is_not_rounded_into_the_old_integer_column(
    data_dir: Path, pg_database: PostgresEndpoint, tmp_path: Path, reader: str
) -> None:
    """The source's `price integer` becomes `numeric(10, 2)` (`alter table ... alter column price
    type numeric(10,2)`) and a row gets 10.75: the next `python -m loaders sql` casts it into the
    warehouse's BIGINT column, which then holds 11, and exits 0 ("updated 1"). Nothing is
    flagged: a value is silently changed. The loader should widen the column (as it adds new
    ones) or stop naming the column, leaving 10. Found against `make services` with
    `ROUNDTRIP_CATALOG_URL` and a `sql:` source on the table."""
    with psycopg.connect(pg_database.url(), autocommit=True) as conn:
        conn.execute("create schema src")
        conn.execute("create table src.items (item_id int primary key, price int, updated_at timestamptz)")
        conn.execute("insert into src.items values (1, 10, '2026-01-01'), (2, 20, '2026-01-01')")
    config = tmp_path / "loaders.yml"
    config.write_text(SQL_CONFIG.format(url=pg_database.url(), reader=reader))
    first = _loaders(config, "sql")
    assert first.returncode == 0, first.stdout + first.stderr
    with psycopg.connect(pg_database.url(), autocommit=True) as conn:
        conn.execute("alter table src.items alter column price type numeric(10, 2)")
        conn.execute("update src.items set price = 10.75, updated_at = '2026-02-01' where item_id = 1")

    second = _loaders(config, "sql")

    held = dict(_warehouse(data_dir, "select item_id, price from raw_cat.items"))
    if second.returncode == 0:
        assert Decimal(str(held[1])) == Decimal("10.75"), f"the warehouse holds {held[1]} for 10.75"
    else:  # a loud failure naming the column, the warehouse as it was
        assert "price" in second.stderr and held[1] == 10


@pytest.mark.postgres
def test_a_source_column_retyped_to_text_fails_naming_the_table_and_column(
    data_dir: Path, pg_database: PostgresEndpoint, tmp_path: Path
) -> None:
    """The source's key `item_id integer` becomes `text` and a row gets 'A-1': every later
    `python -m loaders sql` fails with `error: unexpected ConversionException: Conversion Error:
    Could not convert string 'A-1' to INT64 when casting from source column item_id` and the
    hint "run again with --debug": no table, no source, no way out (`--full-refresh` fails the
    same). The warehouse keeps its rows (the promise holds), but "bad input gets a clear error
    that names the row, file or setting at fault": the source table, the column and the fix
    (the warehouse column's type) should be named. The same for a cursor retyped to bigint
    (`operator does not exist: bigint >= timestamp with time zone`)."""
    with psycopg.connect(pg_database.url(), autocommit=True) as conn:
        conn.execute("create schema src")
        conn.execute("create table src.items (item_id int primary key, price int, updated_at timestamptz)")
        conn.execute("insert into src.items values (1, 10, '2026-01-01'), (2, 20, '2026-01-01')")
    config = tmp_path / "loaders.yml"
    config.write_text(SQL_CONFIG.format(url=pg_database.url(), reader="sqlalchemy"))
    assert _loaders(config, "sql").returncode == 0
    with psycopg.connect(pg_database.url(), autocommit=True) as conn:
        conn.execute("alter table src.items alter column item_id type text")
        conn.execute("update src.items set item_id = 'A-1', updated_at = '2026-02-01' where item_id = '1'")

    failed = _loaders(config, "sql")

    assert failed.returncode == 1
    assert sorted(_warehouse(data_dir, "select item_id, price from raw_cat.items")) == [(1, 10), (2, 20)]
    assert "items" in failed.stderr and "item_id" in failed.stderr, failed.stderr
    assert "unexpected" not in failed.stderr, failed.stderr


@pytest.mark.parametrize("target", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_each_warehouse_refuses_a_value_its_column_would_change(
    target: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The writers themselves (DuckDB and Postgres warehouses): a merge, an append and a replace
    whose staged column no longer fits the warehouse column stop, naming it, and write nothing."""
    import pyarrow as pa

    from loaders.errors import LoaderError

    if target == "duckdb":
        from loaders.warehouse.duckdb import DuckDBWarehouse

        wh = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    else:
        from loaders.warehouse.postgres import PostgresWarehouse

        wh = PostgresWarehouse(request.getfixturevalue("pg_database").url())
    try:
        ints = pa.table({"id": pa.array([1, 2], pa.int64()), "price": pa.array([10, 20], pa.int64())})
        wh.merge("s", "items", iter(ints.to_batches()), ["id"])
        widened = pa.table(
            {"id": pa.array([1], pa.int64()), "price": pa.array([Decimal("10.75")], pa.decimal128(10, 2))}
        )
        writes = [
            lambda: wh.merge("s", "items", iter(widened.to_batches()), ["id"]),
            lambda: wh.append("s", "items", iter(widened.to_batches())),
        ]
        if target == "postgres":  # it truncates and refills the table it has; DuckDB's replace
            writes.append(lambda: wh.replace("s", "items", iter(widened.to_batches())))  # recreates it
        for write in writes:
            with pytest.raises(
                LoaderError, match=r"items\"?\.price is .* but the source now sends .*'10\.75' would not be kept"
            ):
                write()
        fits = pa.table({"id": pa.array([2], pa.int64()), "price": pa.array([Decimal("21.00")], pa.decimal128(10, 2))})
        assert wh.merge("s", "items", iter(fits.to_batches()), ["id"]).updated == 1  # 21.00 is 21: kept
    finally:
        wh.close()
