"""`python -m loaders bigquery` against the BigQuery emulator: a table of another project than the
billing one (cross-project), read through the Storage Read API into DuckDB and Postgres; every
type with NULLs and edge values compared row for row with what was inserted; incremental runs
(only new and changed rows read, the watermark moved, the MERGE exact, nothing read when nothing
is new); views through a query job; errors that name the table and the setting, nothing written."""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from roundtrip.dev.bigquery_emulator import BigQueryEmulator

pytestmark = pytest.mark.bigquery

SOURCE_PROJECT = "other-project"  # the tables live here; the emulator's own project bills the reads
TARGETS = ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]


def _schema() -> list[Any]:
    from google.cloud.bigquery import SchemaField as F

    return [
        F("id", "INT64"),
        F("n", "NUMERIC"),
        F("ts", "TIMESTAMP"),
        F("dt", "DATETIME"),
        F("d", "DATE"),
        F("b", "BOOL"),
        F("byt", "BYTES"),
        F("j", "JSON"),
        F("f", "FLOAT64"),
        F("CamelCase", "STRING"),
        F("t", "TIME"),
        F("tags", "STRING", mode="REPEATED"),
        F(
            "rec",
            "RECORD",
            fields=[F("a", "INT64"), F("seen_at", "TIMESTAMP"), F("amount", "NUMERIC"), F("raw", "BYTES")],
        ),
        F("events", "RECORD", mode="REPEATED", fields=[F("x", "STRING")]),
        F("updated_at", "TIMESTAMP"),
    ]


# what goes in (insertAll's JSON), and the Python value each target must hold for it
ROWS: list[dict[str, Any]] = [
    {
        "id": 1,
        "n": "99999999999999999999999999999.999999999",
        "ts": "9999-12-31T23:59:59.999999Z",
        "dt": "9999-12-31T23:59:59.999999",
        "d": "9999-12-31",
        "b": True,
        "byt": base64.b64encode(b"\x00\xff\n").decode(),
        "j": '{"b": 1, "a": [1, 2.5, null], "s": "\\u00e9\\"q"}',
        "f": "NaN",
        "CamelCase": 'é"; drop table x; -- 🦆\nline',
        "t": "23:59:59.999999",
        "tags": ["a", "b,c"],
        "rec": {
            "a": 1,
            "seen_at": "2026-01-02T03:04:05.123456Z",
            "amount": "1.5",
            "raw": base64.b64encode(b"\x01").decode(),
        },
        "events": [{"x": "y"}, {"x": None}],
        "updated_at": "2026-01-01T00:00:00.000001Z",
    },
    {"id": 2, "tags": [], "events": [], "updated_at": "2026-01-01T00:00:00.000002Z"},  # NULL everywhere else
    {
        "id": 3,
        "n": "-0.000000001",
        "ts": "0001-01-01T00:00:00Z",
        "dt": "0001-01-01T00:00:00",
        "d": "0001-01-01",
        "b": False,
        "byt": "",
        "j": "[]",
        "f": "-Infinity",
        "CamelCase": "",
        "t": "00:00:00",
        "tags": [""],
        "rec": {"a": None, "seen_at": None, "amount": None, "raw": None},
        "events": [],
        "updated_at": "2026-01-01T00:00:00.000003Z",
    },
]


def _expected(row: dict[str, Any]) -> dict[str, Any]:
    """The warehouse row for an inserted row: exact types, NULLs as NULLs, nested as JSON."""

    def ts(text: str | None) -> datetime | None:
        return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))

    rec = row.get("rec")
    return {
        "id": row["id"],
        "n": None if row.get("n") is None else Decimal(row["n"]),
        "ts": ts(row.get("ts")),
        "dt": None if row.get("dt") is None else datetime.fromisoformat(row["dt"]),
        "d": None if row.get("d") is None else date.fromisoformat(row["d"]),
        "b": row.get("b"),
        "byt": None if row.get("byt") is None else base64.b64decode(row["byt"]),
        "j": None if row.get("j") is None else json.loads(row["j"]),
        "f": None if row.get("f") is None else float(row["f"]),
        "camelcase": row.get("CamelCase"),
        "t": None if row.get("t") is None else time.fromisoformat(row["t"]),
        "tags": row["tags"],
        "rec": None
        if rec is None
        else {
            "a": rec["a"],
            "seen_at": None if rec["seen_at"] is None else rec["seen_at"],
            "amount": rec["amount"],  # NUMERIC inside JSON: its exact decimal text
            "raw": rec["raw"],  # BYTES inside JSON: base64
        },
        "events": row["events"],
        "updated_at": ts(row["updated_at"]),
    }


@dataclass
class Source:
    emulator: BigQueryEmulator
    client: Any
    dataset: str

    def table(self, name: str) -> str:
        return f"{SOURCE_PROJECT}.{self.dataset}.{name}"

    def create(self, name: str, rows: list[dict[str, Any]], schema: list[Any] | None = None) -> str:
        from google.cloud import bigquery

        table = self.table(name)
        self.client.create_table(bigquery.Table(table, schema=schema or _schema()), retry=None, timeout=30)
        self.insert(name, rows)
        return table

    def insert(self, name: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            errors = self.client.insert_rows_json(self.table(name), rows, timeout=30, retry=None)
            assert errors == [], errors

    def query(self, statement: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.client.query(statement, retry=None, timeout=30).result(timeout=60)]


@pytest.fixture
def source(bigquery_emulator: BigQueryEmulator) -> Iterator[Source]:
    from google.cloud import bigquery

    client = bigquery_emulator.client()
    dataset = f"src_{uuid.uuid4().hex[:10]}"
    ref = bigquery.Dataset(f"{SOURCE_PROJECT}.{dataset}")
    ref.location = "US"
    client.create_dataset(ref)
    yield Source(bigquery_emulator, client, dataset)
    client.delete_dataset(f"{SOURCE_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)


@dataclass
class Target:
    kind: str
    env: dict[str, str]
    duckdb_path: Path
    pg_url: str | None

    def rows(self, schema: str, table: str, drop: tuple[str, ...] = ("_loaded_at",)) -> list[dict[str, Any]]:
        if self.kind == "duckdb":
            con = duckdb.connect(str(self.duckdb_path), read_only=True)
            try:
                found = con.execute(f'select * from "{schema}"."{table}"').to_arrow_table().to_pylist()
            finally:
                con.close()
        else:
            import psycopg
            from psycopg.rows import dict_row

            with psycopg.connect(self.pg_url, row_factory=dict_row) as conn:
                conn.execute("set timezone = 'UTC'")
                found = conn.execute(f'select * from "{schema}"."{table}"').fetchall()
        rows = [{k: v for k, v in r.items() if k not in drop} for r in found]
        return sorted(rows, key=lambda r: r["id"])

    def column_types(self, schema: str, table: str) -> dict[str, str]:
        query = (
            "select column_name, data_type from information_schema.columns "
            f"where table_schema = '{schema}' and table_name = '{table}'"
        )
        if self.kind == "duckdb":
            con = duckdb.connect(str(self.duckdb_path), read_only=True)
            try:
                return dict(con.execute(query).fetchall())
            finally:
                con.close()
        import psycopg

        with psycopg.connect(self.pg_url) as conn:
            return dict(conn.execute(query).fetchall())  # type: ignore[arg-type]

    def watermark(self, key: str) -> object | None:
        from loaders.state import decode_watermark

        if self.kind == "duckdb":
            con = duckdb.connect(str(self.duckdb_path), read_only=True)
            try:
                found = con.execute("select value from _roundtrip.loader_state where key = ?", [key]).fetchall()
            except duckdb.CatalogException:
                return None
            finally:
                con.close()
        else:
            import psycopg

            with psycopg.connect(self.pg_url) as conn:
                try:
                    found = conn.execute("select value from _roundtrip.loader_state where key = %s", [key]).fetchall()
                except psycopg.errors.UndefinedTable:
                    return None
        return decode_watermark(found[0][0]) if found else None

    def has_table(self, schema: str, table: str) -> bool:
        return bool(self.column_types(schema, table))


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest, tmp_path: Path, bigquery_emulator: BigQueryEmulator) -> Target:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUNDTRIP_")}
    env.update(bigquery_emulator.env())  # billing project: the emulator's own, not SOURCE_PROJECT
    env["ROUNDTRIP_DATA_DIR"] = str(tmp_path / "data")
    pg_url = None
    if request.param == "postgres":
        pg_url = request.getfixturevalue("pg_database").url()
        env["ROUNDTRIP_WAREHOUSE_URL"] = pg_url
    return Target(request.param, env, tmp_path / "data" / "warehouse.duckdb", pg_url)


def _config(tmp_path: Path, tables: list[dict[str, Any]], **source: Any) -> Path:
    import yaml

    path = tmp_path / "loaders.yml"
    path.write_text(yaml.safe_dump({"bigquery": {"src": {"target_schema": "raw_bq", **source, "tables": tables}}}))
    return path


def _run(target: Target, config: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loaders",
            "bigquery",
            "--config",
            str(config),
            "--target",
            target.kind,
            "--json",
            *args,
        ],
        env=target.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if ok:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def _reports(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _comparable(row: dict[str, Any]) -> dict[str, Any]:
    """JSON columns parsed (DuckDB gives JSON text, Postgres jsonb parsed values), NaN made equal."""
    out = dict(row)
    for column in ("j", "tags", "rec", "events"):
        if isinstance(out.get(column), str):
            out[column] = json.loads(out[column])
    if isinstance(out.get("f"), float) and math.isnan(out["f"]):
        out["f"] = "NaN"
    if isinstance(out.get("ts"), datetime):
        out["ts"] = out["ts"].astimezone(UTC)
    if isinstance(out.get("updated_at"), datetime):
        out["updated_at"] = out["updated_at"].astimezone(UTC)
    if isinstance(out.get("byt"), memoryview):
        out["byt"] = bytes(out["byt"])
    return out


@pytest.mark.parametrize("target", TARGETS, indirect=True)
def test_every_type_of_another_project_loads_exactly(source: Source, target: Target, tmp_path: Path) -> None:
    table = source.create("every", ROWS)
    config = _config(tmp_path, [{"name": table, "primary_key": ["id"]}])
    [report] = _reports(_run(target, config))
    assert (report["table"], report["read"], report["inserted"], report["estimated"]) == ("raw_bq.every", 3, 3, 3)

    loaded = [_comparable(r) for r in target.rows("raw_bq", "every")]
    assert loaded == [_comparable(_expected(r)) for r in ROWS]
    # the types, not only the values: exact decimals, zones where BigQuery has them, JSON as JSON
    types = {k: v.lower() for k, v in target.column_types("raw_bq", "every").items()}
    if target.kind == "duckdb":
        assert types["n"] == "decimal(38,9)" and types["ts"] == "timestamp with time zone"
        assert (types["dt"], types["j"], types["rec"], types["byt"]) == ("timestamp", "json", "json", "blob")
    else:
        assert types["n"] == "numeric" and types["ts"] == "timestamp with time zone"
        assert (types["dt"], types["j"], types["rec"], types["byt"]) == (
            "timestamp without time zone", "jsonb", "jsonb", "bytea",
        )  # fmt: skip

    again = _reports(_run(target, config))[0]  # no cursor: everything again, all unchanged
    assert (again["read"], again["inserted"], again["updated"], again["unchanged"]) == (3, 0, 0, 3)


def _incremental_rows(first: int, count: int, stamp: str) -> list[dict[str, Any]]:
    return [
        {"id": i, "name": f"row {i}", "amount": f"{i}.25", "updated_at": stamp} for i in range(first, first + count)
    ]


def _small_schema() -> list[Any]:
    from google.cloud.bigquery import SchemaField as F

    return [F("id", "INT64"), F("name", "STRING"), F("amount", "NUMERIC"), F("updated_at", "TIMESTAMP")]


@pytest.mark.parametrize("target", TARGETS, indirect=True)
def test_incremental_reads_only_new_and_changed_rows(source: Source, target: Target, tmp_path: Path) -> None:
    table = source.create("events", _incremental_rows(1, 5, "2026-03-01T10:00:00.000001Z"), _small_schema())
    config = _config(tmp_path, [{"name": table, "primary_key": ["id"], "cursor": "updated_at"}])
    key = "bigquery:src:events"

    first = _reports(_run(target, config))[0]
    assert (first["read"], first["inserted"]) == (5, 5)
    assert target.watermark(key) == datetime(2026, 3, 1, 10, 0, 0, 1, tzinfo=UTC)

    # two rows added, one changed (its cursor moves), one changed without moving its cursor
    source.insert("events", _incremental_rows(6, 2, "2026-03-01T11:00:00.5Z"))
    source.query(
        f"update `{table}` set name = 'changed', updated_at = timestamp '2026-03-01 12:00:00.123456+00' where id = 2"
    )
    source.query(f"update `{table}` set name = 'missed' where id = 3")
    second = _run(target, config)
    report = _reports(second)[0]
    assert (report["read"], report["inserted"], report["updated"], report["unchanged"]) == (3, 2, 1, 0)
    assert report["estimated"] == 3  # count(*) with the cursor restriction
    assert target.watermark(key) == datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    loaded = {r["id"]: (r["name"], r["amount"]) for r in target.rows("raw_bq", "events")}
    assert loaded == {
        1: ("row 1", Decimal("1.25")),
        2: ("changed", Decimal("2.25")),
        3: ("row 3", Decimal("3.25")),  # its cursor did not move: not read (documented)
        4: ("row 4", Decimal("4.25")),
        5: ("row 5", Decimal("5.25")),
        6: ("row 6", Decimal("6.25")),
        7: ("row 7", Decimal("7.25")),
    }

    third = _reports(_run(target, config))[0]  # nothing new: nothing read, nothing written
    assert (third["read"], third["inserted"], third["updated"], third["estimated"]) == (0, 0, 0, 0)
    assert target.watermark(key) == datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)

    # a full refresh reads everything, finds the missed change; the watermark stays the highest
    full = _reports(_run(target, config, "--full-refresh"))[0]
    assert (full["read"], full["updated"], full["unchanged"]) == (7, 1, 6)
    assert {r["id"]: r["name"] for r in target.rows("raw_bq", "events")}[3] == "missed"


@pytest.mark.parametrize("target", ["duckdb"], indirect=True)
def test_lookback_rereads_late_rows_and_int_cursor(source: Source, target: Target, tmp_path: Path) -> None:
    stamped = source.create("late", _incremental_rows(1, 3, "2026-03-01T10:00:00Z"), _small_schema())
    config = _config(tmp_path, [{"name": stamped, "primary_key": ["id"], "cursor": "updated_at", "lookback": "1h"}])
    assert _reports(_run(target, config))[0]["read"] == 3
    # a row that committed late, with a cursor 30 minutes behind the watermark: the lookback catches it
    source.insert("late", _incremental_rows(10, 1, "2026-03-01T09:30:00Z"))
    report = _reports(_run(target, config))[0]
    assert (report["read"], report["inserted"], report["unchanged"]) == (4, 1, 3)
    assert sorted(r["id"] for r in target.rows("raw_bq", "late")) == [1, 2, 3, 10]

    # an INT64 cursor: the lookback is a number of cursor units
    from google.cloud.bigquery import SchemaField as F

    numbered = source.create(
        "numbered", [{"id": i, "seq": i * 10} for i in range(1, 4)], [F("id", "INT64"), F("seq", "INT64")]
    )
    config = _config(tmp_path, [{"name": numbered, "primary_key": ["id"], "cursor": "seq", "lookback": 10}])
    assert _reports(_run(target, config))[0]["read"] == 3
    source.insert("numbered", [{"id": 4, "seq": 40}])
    assert _reports(_run(target, config))[0]["read"] == 2  # seq > 30 - 10: rows 3 and 4
    assert target.watermark("bigquery:src:numbered") == 40


@pytest.mark.parametrize("target", ["duckdb"], indirect=True)
def test_columns_filter_and_estimate(source: Source, target: Target, tmp_path: Path) -> None:
    table = source.create("picked", _incremental_rows(1, 10, "2026-03-01T10:00:00Z"), _small_schema())
    config = _config(
        tmp_path,
        [{"name": table, "primary_key": ["id"], "columns": ["name"], "filter": "id > 4 and name != 'row 9'"}],
    )
    estimate = _reports(_run(target, config, "--estimate"))[0]
    assert (estimate["estimated_rows"], estimate["counted_by"]) == (5, "count(*)")
    assert not target.duckdb_path.exists() or not target.has_table("raw_bq", "picked")  # read nothing
    report = _reports(_run(target, config))[0]
    assert (report["read"], report["estimated"]) == (5, 5)
    # the selected columns (and the key, always read), no others
    assert target.rows("raw_bq", "picked") == [{"name": f"row {i}", "id": i} for i in (5, 6, 7, 8, 10)]

    whole = _config(tmp_path, [{"name": table, "primary_key": ["id"]}])
    estimate = _reports(_run(target, whole, "--estimate"))[0]
    assert (estimate["estimated_rows"], estimate["counted_by"]) == (10, "table metadata")


@pytest.mark.parametrize("target", TARGETS, indirect=True)
def test_a_view_is_read_through_a_query_job(source: Source, target: Target, tmp_path: Path) -> None:
    table = source.create("base", _incremental_rows(1, 6, "2026-03-01T10:00:00Z"), _small_schema())
    source.query(f"create view `{source.table('recent')}` as select id, name, updated_at from `{table}` where id > 2")
    config = _config(
        tmp_path,
        [{"name": source.table("recent"), "primary_key": ["id"], "cursor": "updated_at", "filter": "id < 6"}],
        query_dataset=f"{source.emulator.project}.{source.dataset}_results",
    )
    from google.cloud import bigquery

    results = bigquery.Dataset(f"{source.emulator.project}.{source.dataset}_results")
    results.location = "US"
    source.client.create_dataset(results)
    report = _reports(_run(target, config))[0]
    assert (report["read"], report["inserted"], report["estimated"]) == (3, 3, 3)
    assert [(r["id"], r["name"]) for r in target.rows("raw_bq", "recent")] == [(3, "row 3"), (4, "row 4"), (5, "row 5")]
    assert list(source.client.list_tables(results)) == []  # the query's result table was dropped
    assert _reports(_run(target, config))[0]["read"] == 0


ERRORS = [
    ({"name": "{project}.{dataset}.missing"}, ["missing", "not found", "name in loaders.yml"]),
    ({"columns": ["nope"]}, ["no column 'nope'", "columns in loaders.yml"]),
    ({"primary_key": ["nope"]}, ["no column 'nope'", "primary_key in loaders.yml"]),
    ({"cursor": "name"}, ["cursor 'name' is STRING", "cursor in loaders.yml"]),
    ({"cursor": "updated_at", "lookback": "soon"}, ["lookback 'soon'"]),
    ({"filter": "nope > 1"}, ["nope", "filter in loaders.yml"]),
]
# each error on DuckDB, one on Postgres as well: the checks run before any warehouse write
ERROR_CASES = [pytest.param("duckdb", *e, id=f"duckdb-{i}") for i, e in enumerate(ERRORS)] + [
    pytest.param("postgres", *ERRORS[-1], id="postgres-filter", marks=pytest.mark.postgres)
]


@pytest.mark.parametrize(("target", "settings", "words"), ERROR_CASES, indirect=["target"])
def test_errors_name_the_table_and_setting_and_write_nothing(
    source: Source, target: Target, tmp_path: Path, settings: dict[str, Any], words: list[str]
) -> None:
    good = source.create("good", _incremental_rows(1, 2, "2026-03-01T10:00:00Z"), _small_schema())
    bad = source.create("bad", _incremental_rows(1, 2, "2026-03-01T10:00:00Z"), _small_schema())
    entry = {"name": bad, "primary_key": ["id"], **settings}
    entry["name"] = entry["name"].format(project=SOURCE_PROJECT, dataset=source.dataset)
    config = _config(tmp_path, [{"name": good, "primary_key": ["id"]}, entry])
    done = _run(target, config, ok=False)
    assert done.returncode == 1
    message = done.stderr.strip().splitlines()[0]
    assert message.startswith("error: bigquery.src ") and entry["name"] in message, done.stderr
    for word in words:
        assert word in message, message
    assert "Traceback" not in done.stderr
    # every table is checked before any is read: not even the good one was written
    if target.kind == "postgres" or target.duckdb_path.exists():
        assert not target.has_table("raw_bq", "good")


def test_json_text_of_nested_values_is_exact() -> None:
    from loaders.sources.bigquery import _json_text

    value = {
        "n": Decimal("-0.000000001"),
        "big": Decimal("12345678901234567890123456789012345678.12345678901234567890123456789012345678"),
        "ts": datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        "dt": datetime(2026, 1, 2, 3, 4, 5, 1),
        "d": date(1, 1, 1),
        "t": time(23, 59, 59, 999999),
        "b": b"\x00\xff",
        "f": [float("nan"), float("inf"), -0.0, 5e-324],
        "i": 2**63 - 1,
        "none": None,
    }
    assert json.loads(_json_text(value)) == {
        "n": "-0.000000001",
        "big": "12345678901234567890123456789012345678.12345678901234567890123456789012345678",
        "ts": "2026-01-02T03:04:05.123456Z",
        "dt": "2026-01-02T03:04:05.000001",
        "d": "0001-01-01",
        "t": "23:59:59.999999",
        "b": "AP8=",
        "f": ["NaN", "Infinity", -0.0, 5e-324],
        "i": 9223372036854775807,
        "none": None,
    }


BIGNUMERICS = [
    Decimal("12345678901234567890123456789012345678.12345678901234567890123456789012345678"),
    Decimal("-0.00000000000000000000000000000000000001"),
    Decimal("100"),
    None,
]


@pytest.mark.parametrize("kind", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_bignumeric_keeps_all_76_digits(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The emulator stores BIGNUMERIC as DuckDB's 38-digit decimal (a gap), so the Storage Read API's
    real type, decimal256(76, 38), is converted here as the reader hands it over, then loaded."""
    from loaders.sources.bigquery import Column, TablePlan, convert
    from roundtrip.core.bigquery_read import TableId

    plan = TablePlan(
        "bigquery.src p.d.t", TableId("p", "d", "t"), "TABLE", None,
        [Column("id", "id", "INT64", False), Column("Big", "big", "BIGNUMERIC", False)],
        ["id"], None, None, 4, None, "t",
    )  # fmt: skip
    batch = pa.RecordBatch.from_pydict(
        {"id": pa.array([1, 2, 3, 4]), "Big": pa.array(BIGNUMERICS, pa.decimal256(76, 38))}
    )
    data = convert(batch, plan, kind)
    if kind == "duckdb":
        from loaders.warehouse.duckdb import DuckDBWarehouse

        wh: Any = DuckDBWarehouse(tmp_path / "w.duckdb")
    else:
        from loaders.warehouse.postgres import PostgresWarehouse

        wh = PostgresWarehouse(request.getfixturevalue("pg_database").url())
    try:
        wh.merge("raw_bq", "t", [data], ["id"])
        loaded = sorted(wh.read_table("raw_bq", "t").to_pylist(), key=lambda r: r["id"])
    finally:
        wh.close()
    assert [None if r["big"] is None else Decimal(r["big"]) for r in loaded] == BIGNUMERICS


@pytest.mark.postgres
def test_a_nul_character_is_refused_for_postgres_naming_the_row(source: Source, tmp_path: Path, request: Any) -> None:
    pg_url = request.getfixturevalue("pg_database").url()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUNDTRIP_")}
    env.update(source.emulator.env())
    env["ROUNDTRIP_WAREHOUSE_URL"] = pg_url
    table = source.create("nul", [{"id": 1, "name": "fine"}, {"id": 2, "name": "a\x00b"}], _small_schema()[:2])
    config = _config(tmp_path, [{"name": table, "primary_key": ["id"]}])
    done = subprocess.run(
        [sys.executable, "-m", "loaders", "bigquery", "--config", str(config), "--target", "postgres"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 1
    assert "column 'name' of the row with key {'id': 2} holds a NUL character" in done.stderr, done.stderr
    import psycopg

    with psycopg.connect(pg_url) as conn:  # nothing half-written
        assert conn.execute("select to_regclass('raw_bq.nul')").fetchone() == (None,)


def test_into_bigquery_itself_every_type_then_incrementally(source: Source, tmp_path: Path) -> None:
    """BigQuery -> BigQuery (another project into the billing project's dataset): JSON columns stay
    JSON, the MERGE compares them by their text (BigQuery's JSON has no equality)."""
    emulator = source.emulator
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUNDTRIP_")}
    env.update({**emulator.env(), "ROUNDTRIP_BQ_LOCATION": "US"})
    table = source.create("every", ROWS)
    dataset = f"raw_{uuid.uuid4().hex[:8]}"
    config = tmp_path / "loaders.yml"
    import yaml

    entry = {"name": table, "primary_key": ["id"], "cursor": "updated_at"}
    config.write_text(yaml.safe_dump({"bigquery": {"src": {"target_schema": dataset, "tables": [entry]}}}))
    target = Target("bigquery", env, tmp_path / "unused.duckdb", None)
    [first] = _reports(_run(target, config))
    assert (first["read"], first["inserted"]) == (3, 3)

    def loaded() -> list[dict[str, Any]]:
        data = source.client.list_rows(f"{emulator.project}.{dataset}.every").to_arrow(create_bqstorage_client=False)
        rows = [{k: v for k, v in r.items() if k != "_loaded_at"} for r in data.to_pylist()]
        return [_comparable(r) for r in sorted(rows, key=lambda r: r["id"])]

    assert loaded() == [_comparable(_expected(r)) for r in ROWS]
    types = {f.name: f.field_type for f in source.client.get_table(f"{emulator.project}.{dataset}.every").schema}
    assert (types["n"], types["j"], types["rec"], types["ts"], types["dt"]) == (
        "NUMERIC", "JSON", "JSON", "TIMESTAMP", "DATETIME",
    )  # fmt: skip

    changed = {**ROWS[1], "id": 2, "j": '{"now": "set"}', "updated_at": "2026-02-01T00:00:00Z"}
    source.query(f"delete from `{table}` where id = 2")
    source.insert("every", [changed, {**ROWS[1], "id": 4, "updated_at": "2026-02-01T00:00:00Z"}])
    [second] = _reports(_run(target, config))
    assert (second["read"], second["inserted"], second["updated"], second["unchanged"]) == (2, 1, 1, 0)
    assert loaded() == [
        _comparable(_expected(r))
        for r in (ROWS[0], changed, ROWS[2], {**ROWS[1], "id": 4, "updated_at": "2026-02-01T00:00:00Z"})
    ]


@pytest.mark.parametrize("target", ["duckdb"], indirect=True)
def test_medallion_auto_counts_the_bigquery_sources(source: Source, target: Target, tmp_path: Path) -> None:
    """`medallion-auto --bigquery`: the loader's estimate joins the bronze estimate in the choice."""
    table = source.create("big", _incremental_rows(1, 7, "2026-03-01T10:00:00Z"), _small_schema())
    config = _config(tmp_path, [{"name": table, "primary_key": ["id"], "filter": "id > 2"}])
    env = {**target.env, "ROUNDTRIP_LOADERS_CONFIG": str(config)}
    (tmp_path / "landing").mkdir()
    command = [sys.executable, "-m", "spark_jobs", "auto", "--plan", "--json", "--bigquery", "--threshold", "4"]
    done = subprocess.run(
        [*command, "--landing", str(tmp_path / "landing")], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert {line["stream"]: line["rows"] for line in lines[:-1]} == {
        "orders": 0,
        "clicks": 0,
        f"bigquery:src {table}": 5,
    }
    assert lines[-1]["engine"] == "spark" and "~5 rows" in lines[-1]["reason"]
