"""SQLite -> every warehouse: exact values, NULLs, incremental runs, deletes, atomic failures."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from loaders import jobs, state
from loaders.config import SqliteSourceConfig, SqliteTableConfig
from loaders.errors import LoaderError
from loaders.warehouse import Warehouse
from tests.loader_fixtures import rows_by_key

PEOPLE_DDL = """create table people (
    id integer primary key,
    name text,
    "select" text,
    score real,
    visits integer,
    is_active boolean,
    avatar blob,
    signup_at real,
    updated_at integer,
    last_login text
)"""
PEOPLE = [
    (
        1,
        'Zoë "the" O\'Brien ✓',
        "from",
        1.5,
        3,
        1,
        b"\x00\xff",
        1700000000.123456,
        1700000100,
        "2024-02-29T12:34:56.789012+02:00",
    ),
    (2, None, None, None, None, None, None, None, 1700000010, None),
    (3, "naïve\nline", "where", 0.0, 0, 0, b"", 0.5, 1700000050, "1999-12-31 23:59:59"),
]
# what each row must read back as, written out by hand
EXPECTED = [
    {
        "id": 1,
        "name": 'Zoë "the" O\'Brien ✓',
        "select": "from",
        "score": 1.5,
        "visits": 3,
        "is_active": True,
        "avatar": b"\x00\xff",
        "signup_at": datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC),
        "updated_at": datetime(2023, 11, 14, 22, 15, 0, tzinfo=UTC),
        "last_login": datetime(2024, 2, 29, 12, 34, 56, 789012, tzinfo=timezone(timedelta(hours=2))),
    },
    {
        "id": 2,
        "name": None,
        "select": None,
        "score": None,
        "visits": None,
        "is_active": None,
        "avatar": None,
        "signup_at": None,
        "updated_at": datetime(2023, 11, 14, 22, 13, 30, tzinfo=UTC),
        "last_login": None,
    },
    {
        "id": 3,
        "name": "naïve\nline",
        "select": "where",
        "score": 0.0,
        "visits": 0,
        "is_active": False,
        "avatar": b"",
        "signup_at": datetime(1970, 1, 1, 0, 0, 0, 500000, tzinfo=UTC),
        "updated_at": datetime(2023, 11, 14, 22, 14, 10, tzinfo=UTC),
        "last_login": datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
    },
]
TIMESTAMPS = {"signup_at": "epoch_s", "updated_at": "epoch_s", "last_login": "iso"}


def _database(path: Path, ddl: str, table: str, rows: list[tuple]) -> Path:  # type: ignore[type-arg]
    with sqlite3.connect(path) as con:
        con.execute(ddl)
        con.executemany(f"insert into {table} values ({', '.join('?' * len(rows[0]))})", rows)
    return path


def _people_source(path: Path, schema: str, **table: object) -> SqliteSourceConfig:
    settings = {"name": "people", "primary_key": ["id"], "cursor": "updated_at", "timestamps": TIMESTAMPS, **table}
    return SqliteSourceConfig(path=str(path), target_schema=schema, tables=[SqliteTableConfig(**settings)])


def test_sync_reads_back_equal_then_a_second_run_changes_exactly_two_rows(
    warehouse: Warehouse, tmp_path: Path, schema_name: str
) -> None:
    db = _database(tmp_path / "app.db", PEOPLE_DDL, "people", PEOPLE)
    source = _people_source(db, schema_name)

    [first] = jobs.load_sqlite(schema_name, source, warehouse)
    assert (first.read, first.result.inserted, first.result.updated) == (3, 3, 0)
    assert rows_by_key(warehouse, schema_name, "people", "id", drop=("_loaded_at",)) == EXPECTED
    assert state.get_watermark(warehouse, f"sqlite:{schema_name}:people") == 1700000100

    with sqlite3.connect(db) as con:
        con.execute("update people set name = 'Zoé', updated_at = 1700000200 where id = 1")
        con.execute("insert into people (id, name, updated_at) values (4, 'new', 1700000300)")
    [second] = jobs.load_sqlite(schema_name, source, warehouse)

    # only rows at or past the watermark are read: the updated one and the new one
    assert (second.read, second.result.inserted, second.result.updated, second.result.unchanged) == (2, 1, 1, 0)
    after = rows_by_key(warehouse, schema_name, "people", "id", drop=("_loaded_at",))
    assert after[0] == {**EXPECTED[0], "name": "Zoé", "updated_at": datetime(2023, 11, 14, 22, 16, 40, tzinfo=UTC)}
    assert after[1:3] == EXPECTED[1:3]
    assert after[3]["id"] == 4 and after[3]["name"] == "new" and after[3]["score"] is None
    assert state.get_watermark(warehouse, f"sqlite:{schema_name}:people") == 1700000300

    [third] = jobs.load_sqlite(schema_name, source, warehouse)
    assert (third.read, third.result.inserted, third.result.updated, third.result.unchanged) == (1, 0, 0, 1)


def test_delete_propagation_removes_rows_gone_from_the_source(
    warehouse: Warehouse, tmp_path: Path, schema_name: str
) -> None:
    db = _database(tmp_path / "app.db", PEOPLE_DDL, "people", PEOPLE)
    source = _people_source(db, schema_name, delete_propagation=True)
    jobs.load_sqlite(schema_name, source, warehouse)
    with sqlite3.connect(db) as con:
        con.execute("delete from people where id = 2")

    [report] = jobs.load_sqlite(schema_name, source, warehouse)

    assert report.result.deleted == 1
    assert [r["id"] for r in rows_by_key(warehouse, schema_name, "people", "id")] == [1, 3]


def test_a_failed_run_leaves_rows_and_watermark_as_they_were(
    warehouse: Warehouse, tmp_path: Path, schema_name: str
) -> None:
    db = _database(tmp_path / "app.db", PEOPLE_DDL, "people", PEOPLE)
    source = _people_source(db, schema_name)
    jobs.load_sqlite(schema_name, source, warehouse)
    before = rows_by_key(warehouse, schema_name, "people", "id")
    with sqlite3.connect(db) as con:
        con.execute("update people set name = 'changed', updated_at = 1700000400 where id = 1")
        con.execute("insert into people (id, visits, updated_at) values (5, 'many', 1700000500)")

    with pytest.raises(LoaderError, match=r"row 2 \(id=5\): column 'visits' declared INTEGER holds 'many'"):
        jobs.load_sqlite(schema_name, source, warehouse)

    assert rows_by_key(warehouse, schema_name, "people", "id") == before
    assert state.get_watermark(warehouse, f"sqlite:{schema_name}:people") == 1700000100


EVENTS_DDL = "create table events (code text, payload text, seen_at integer)"
EVENTS = [("a", "old", 10), ("b", "only", 15), ("a", "new", 20)]


def test_repeated_keys_keep_the_latest_row_by_cursor(tmp_path: Path, schema_name: str) -> None:
    from loaders.warehouse.duckdb import DuckDBWarehouse

    db = _database(tmp_path / "app.db", EVENTS_DDL, "events", EVENTS)
    table = SqliteTableConfig(name="events", primary_key=["code"], cursor="seen_at")
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    try:
        jobs.load_sqlite("s", SqliteSourceConfig(path=str(db), target_schema=schema_name, tables=[table]), warehouse)
        rows = rows_by_key(warehouse, schema_name, "events", "code", drop=("_loaded_at",))
    finally:
        warehouse.close()
    assert rows == [{"code": "a", "payload": "new", "seen_at": 20}, {"code": "b", "payload": "only", "seen_at": 15}]


def test_repeated_keys_without_a_cursor_are_an_error_that_names_the_key(
    warehouse: Warehouse, tmp_path: Path, schema_name: str
) -> None:
    db = _database(tmp_path / "app.db", EVENTS_DDL, "events", EVENTS)
    table = SqliteTableConfig(name="events", primary_key=["code"])
    source = SqliteSourceConfig(path=str(db), target_schema=schema_name, tables=[table])

    with pytest.raises(LoaderError, match=r"key \{'code': 'a'\} appears 2 times"):
        jobs.load_sqlite("s", source, warehouse)

    assert warehouse.read_table(schema_name, "events") is None


READINGS_DDL = """create table readings (
    device text,
    seen_at integer,
    day date,
    price numeric(10, 2),
    ratio decimal(5),
    note numeric,
    primary key (device, seen_at, day)
)"""
READINGS = [
    ("d1", 1700000000, "2024-02-29", 12.5, 3, "x"),
    ("d1", 1700000060, "2024-03-01", "3", 4.5, 7),
    ("d2", 1700000000, "1999-12-31", 0.1 + 0.2, None, None),
    ("d3", 1700000120, "2000-01-01", 1.005, -2.5, 1.5),
]


def test_timestamp_and_date_keys_propagate_deletes_and_numeric_is_a_decimal(
    warehouse: Warehouse, tmp_path: Path, schema_name: str
) -> None:
    """The keys read for delete propagation are typed like the rows (the key holds an epoch
    timestamp and a date); NUMERIC(p, s) is an exact decimal, rounded half away from zero."""
    from decimal import Decimal

    db = _database(tmp_path / "app.db", READINGS_DDL, "readings", READINGS)
    table = SqliteTableConfig(
        name="readings",
        primary_key=["device", "seen_at", "day"],
        timestamps={"seen_at": "epoch_s", "day": "date"},
        delete_propagation=True,
    )
    source = SqliteSourceConfig(path=str(db), target_schema=schema_name, tables=[table])
    jobs.load_sqlite("s", source, warehouse)
    with sqlite3.connect(db) as con:
        con.execute("delete from readings where device = 'd1' and seen_at = 1700000060")

    [report] = jobs.load_sqlite("s", source, warehouse)

    assert (report.result.deleted, report.result.unchanged) == (1, 3)
    rows = sorted(
        (
            (r["device"], r["seen_at"], r["day"], r["price"], r["ratio"], r["note"])
            for r in rows_by_key(warehouse, schema_name, "readings", "device")
        ),
        key=str,
    )
    t0 = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert rows == [
        ("d1", t0, date(2024, 2, 29), Decimal("12.50"), Decimal("3"), "x"),
        ("d2", t0, date(1999, 12, 31), Decimal("0.30"), None, None),
        ("d3", t0 + timedelta(minutes=2), date(2000, 1, 1), Decimal("1.01"), Decimal("-3"), "1.5"),
    ]


def test_a_date_that_is_not_yyyy_mm_dd_is_an_error_naming_the_row(tmp_path: Path, schema_name: str) -> None:
    from loaders.warehouse.duckdb import DuckDBWarehouse

    db = _database(tmp_path / "app.db", "create table t (id integer primary key, day date)", "t", [(1, "2024-02-30")])
    table = SqliteTableConfig(name="t", primary_key=["id"], timestamps={"day": "date"})
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    try:
        with pytest.raises(LoaderError, match=r"row 1 \(id=1\): column 'day' value '2024-02-30' is not a date"):
            jobs.load_sqlite(
                "s", SqliteSourceConfig(path=str(db), target_schema=schema_name, tables=[table]), warehouse
            )
        assert warehouse.read_table(schema_name, "t") is None
    finally:
        warehouse.close()
