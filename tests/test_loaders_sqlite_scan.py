"""The SQLite reader through DuckDB's scanner gives what the Python reader gives: the same
batches, watermarks and errors; where it cannot vouch for a batch the Python reader reads on."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest

from loaders.config import SqliteTableConfig
from loaders.errors import LoaderError
from loaders.sources import sqlite as sqlite_source
from loaders.sources import sqlite_scan

DDL = """create table users (
    id integer primary key, name text, visits integer, score real,
    signup_at real, updated_at integer, seen_ms integer, last_login text
)"""
TIMESTAMPS = {"signup_at": "epoch_s", "updated_at": "epoch_s", "seen_ms": "epoch_ms", "last_login": "iso"}
LOGINS = [
    "2024-02-29T12:34:56.789012+02:00",
    "1999-12-31 23:59:59",
    "2026-06-03T07:53:41.000Z",
    "2026-06-03T07:53:41-09:30",
    None,
]
SIGNUPS = [1700000000.123456, 0.5, -1.5, None, 1746721214.385911, 1e-06]
# shortest reprs with more digits than microseconds: exact only by the Decimal rule
ROUNDED_SIGNUPS = [1700000000.1234567, 1.0000005]


def _rows(n: int, signups: list[float | None] = SIGNUPS) -> list[tuple[object, ...]]:
    return [
        (
            i,
            None if i % 7 == 0 else f"name {i} ✓ \"q\" 'o'",
            None if i % 5 == 0 else i * 3,
            None if i % 11 == 0 else i / 8,
            signups[i % len(signups)],
            1_700_000_000 + (i * 7919) % 1000,  # repeats: ties ordered by key
            None if i % 3 == 0 else 1_700_000_000_123 + i,
            LOGINS[i % len(LOGINS)],
        )
        for i in range(1, n + 1)
    ]


def _database(path: Path, rows: list[tuple[object, ...]], ddl: str = DDL) -> Path:
    with sqlite3.connect(path) as con:
        con.execute(ddl)
        con.executemany(f"insert into users values ({', '.join('?' * len(rows[0]))})", rows)
    return path


def _table(**settings: object) -> SqliteTableConfig:
    return SqliteTableConfig(
        **{"name": "users", "primary_key": ["id"], "cursor": "updated_at", "timestamps": TIMESTAMPS, **settings}
    )


def _read(db: Path, table: SqliteTableConfig, scan: bool, **kw: object) -> list[tuple[pa.Table, object]]:
    # scan_min_rows: 0 sends every read to the scanner, a huge number none
    return list(sqlite_source.read_batches(db, table, scan_min_rows=0 if scan else 10**12, **kw))  # type: ignore[arg-type]


def _error(db: Path, table: SqliteTableConfig, scan: bool, **kw: object) -> tuple[int, str]:
    """Rows read before the error, and its message."""
    read = 0
    with pytest.raises(LoaderError) as caught:
        for batch, _ in sqlite_source.read_batches(db, table, scan_min_rows=0 if scan else 10**12, **kw):  # type: ignore[arg-type]
            read += batch.num_rows
    return read, str(caught.value)


def _counting_conversions(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each scanned batch was converted by the scanner (False: the Python reader took over)."""
    vouched: list[bool] = []
    convert = sqlite_scan.convert

    def counted(*args: object) -> pa.Table | None:
        out = convert(*args)  # type: ignore[arg-type]
        vouched.append(out is not None)
        return out

    monkeypatch.setattr(sqlite_scan, "convert", counted)
    return vouched


def test_the_scanner_gives_the_python_readers_batches_and_watermarks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _database(tmp_path / "app.db", _rows(2500))
    table = _table()
    vouched = _counting_conversions(monkeypatch)

    scanned = _read(db, table, scan=True, batch_rows=1000)
    python = _read(db, table, scan=False, batch_rows=1000)

    assert vouched == [True] * len(scanned) == [True] * 3  # every batch came from the scanner
    assert [(b.num_rows, m) for b, m in scanned] == [(b.num_rows, m) for b, m in python]
    assert pa.concat_tables([b for b, _ in scanned]).equals(pa.concat_tables([b for b, _ in python]))


def test_timestamps_finer_than_microseconds_are_rounded_by_the_python_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _database(tmp_path / "app.db", _rows(3000, [*SIGNUPS, *ROUNDED_SIGNUPS]))
    vouched = _counting_conversions(monkeypatch)

    scanned = _read(db, _table(), scan=True, batch_rows=1000)
    python = _read(db, _table(), scan=False, batch_rows=1000)

    assert vouched == [False]  # the first batch already holds one: the Python reader reads it all
    assert pa.concat_tables([b for b, _ in scanned]).equals(pa.concat_tables([b for b, _ in python]))
    whole = pa.concat_tables([b for b, _ in scanned])
    signups = dict(zip(whole.column("id").to_pylist(), whole.column("signup_at").to_pylist()))
    assert signups[6].microsecond == 123457  # 1700000000.1234567: half-even to the microsecond


def test_a_value_the_scanner_refuses_is_the_python_readers_error(tmp_path: Path) -> None:
    rows = _rows(50)
    rows[40] = (41, "x", "many", 1.0, 0.5, 1_700_000_999, None, None)  # text in an INTEGER column
    db = _database(tmp_path / "app.db", rows)

    assert _error(db, _table(), scan=True) == _error(db, _table(), scan=False)
    assert re.search(r"row \d+ \(id=41\): column 'visits' declared INTEGER holds 'many'", _error(db, _table(), True)[1])


def test_a_batch_it_cannot_vouch_for_is_read_on_by_the_python_reader(tmp_path: Path) -> None:
    """Text that is not UTF-8 (a blob in a TEXT column) in the last batch: the first batches come
    from the scanner, the last one from the Python reader, which names the row."""
    rows = _rows(300)
    rows[299] = (300, b"\xff\xfe", 1, 1.0, 0.5, 1_700_001_000, None, None)
    db = _database(tmp_path / "app.db", rows)

    scanned, python = _error(db, _table(), True, batch_rows=100), _error(db, _table(), False, batch_rows=100)

    assert scanned == python
    assert scanned[0] == 200 and "id=300" in scanned[1]


def test_an_unparseable_timestamp_is_the_python_readers_error(tmp_path: Path) -> None:
    rows = _rows(20)
    rows[5] = (6, "x", 1, 1.0, 0.5, 1_700_000_001, None, "yesterday")
    db = _database(tmp_path / "app.db", rows)

    assert _error(db, _table(), True) == _error(db, _table(), False)


def test_keys_that_may_repeat_are_left_to_the_python_reader(tmp_path: Path) -> None:
    """Repeated keys are resolved by rowid, which the scanner does not show."""
    ddl = DDL.replace("id integer primary key", "id integer")
    db = _database(tmp_path / "app.db", [*_rows(10), (3, "again", 1, 1.0, 0.5, 1_700_009_999, None, None)], ddl)
    con = sqlite3.connect(db)
    columns = sqlite_source.read_schema(con, "users")

    assert sqlite_scan.plan(con, _table(), columns, None, 0) is None
    assert sqlite_scan.plan(con, _table(cursor=None), columns, None, 0) is not None
    [(batch, _)] = _read(db, _table(), scan=True)
    assert batch.num_rows == 10 and "again" in batch.column("name").to_pylist()


@pytest.mark.parametrize(
    "ddl",
    [
        DDL.replace("id integer primary key", "id integer primary key desc"),  # not the rowid: NULLs allowed
        DDL.replace("name text", "name text collate nocase"),  # SQLite sorts it otherwise
    ],
)
def test_tables_whose_order_or_keys_the_scanner_cannot_match_are_left_to_the_python_reader(
    tmp_path: Path, ddl: str
) -> None:
    db = _database(tmp_path / "app.db", _rows(10), ddl)
    con = sqlite3.connect(db)
    assert sqlite_scan.plan(con, _table(), sqlite_source.read_schema(con, "users"), None, 0) is None


def test_a_unique_index_on_not_null_columns_lets_the_scanner_read(tmp_path: Path) -> None:
    ddl = DDL.replace("id integer primary key", "id integer not null")
    db = _database(tmp_path / "app.db", _rows(10), ddl)
    con = sqlite3.connect(db)
    columns = sqlite_source.read_schema(con, "users")
    assert sqlite_scan.plan(con, _table(), columns, None, 0) is None
    con.execute("create unique index users_id on users (id)")
    assert sqlite_scan.plan(con, _table(), sqlite_source.read_schema(con, "users"), None, 0) is not None


def test_small_reads_and_other_types_stay_with_the_python_reader(tmp_path: Path) -> None:
    db = _database(tmp_path / "app.db", _rows(10))
    con = sqlite3.connect(db)
    columns = sqlite_source.read_schema(con, "users")

    assert sqlite_scan.plan(con, _table(), columns, None, min_rows=11) is None
    assert sqlite_scan.plan(con, _table(), columns, 1_700_000_500, min_rows=0) is None  # incremental: small
    assert sqlite_scan.plan(con, _table(timestamps={"last_login": "date"}), columns, None, 0) is None
