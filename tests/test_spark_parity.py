"""Spark and dbt-on-DuckDB give the same silver and gold, row for row, on the same bronze files.

One small generated data set with every defect kind of the generator (checked first, so the
comparison cannot pass on data that lacks them). The dbt side is the warehouse path of the
``auto`` engine (loaders + ``dbt build``) into a temp DuckDB file; the Spark side reads the same
landing files and the same Postgres catalog over JDBC, and writes Parquet. Whole frames are
compared, types included.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import duckdb
import psycopg
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from roundtrip.core.contract import BRONZE_FIELDS
from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.dev.sample_data import DefectRates, SampleConfig, generate
from roundtrip.dev.sample_data.model import BAD_TIMESTAMPS, INVALID_EVENT_TYPES
from roundtrip.dev.services import PostgresEndpoint
from spark_jobs import auto, bronze_to_silver, silver_to_gold, storage
from spark_jobs.config import CatalogSource, DateWindow, JobConfig
from spark_jobs.expressions import parse_iso_timestamp

pytestmark = [
    pytest.mark.spark,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

# small, but with every defect frequent enough to show up several times
SAMPLE = SampleConfig(
    seed=11,
    users=300,
    items=150,
    orders=2_500,
    clicks=5_000,
    days=6,
    defects=DefectRates(
        redelivered=0.04,
        redelivered_same_time=0.015,
        null_ingestion_id=0.01,
        null_key=0.01,
        bad_quantity=0.01,
        bad_price=0.015,
        unknown_item=0.01,
        bad_timestamp=0.04,
        offset_timestamp=0.2,
        invalid_event_type=0.02,
    ),
)
TABLES = {
    "orders_clean": "silver",
    "clicks_clean": "silver",
    "daily_gmv_metrics": "gold",
    "item_performance": "gold",
    "user_funnel_metrics": "gold",
    "hourly_order_patterns": "gold",
}


def _defects(stream: str, day: str) -> bytes:
    """Lines the generator never writes: records that lack fields entirely (next to explicit
    nulls), and lines that are no record at all (the loader holds them back, Spark skips them)."""
    fields = BRONZE_FIELDS[stream]
    base = {f: None for f in fields} | {
        "ingestion_id": f"defects-{stream}",
        "user_id": "1",
        "item_id": "1",
        "session_id": "s-defects",
        "event_ts": f"{day}T10:00:00Z",
        "ingested_at": f"{day}T10:00:01Z",
    } | ({"order_id": "d-1", "quantity": "1", "unit_price": "1.00", "currency": "EUR"} if stream == "orders" else
         {"event_id": "d-1", "event_type": "view"})  # fmt: skip

    def line(drop: tuple[str, ...] = (), **values: object) -> bytes:
        record = {k: v for k, v in {**base, **values}.items() if k not in drop}
        return json.dumps(record).encode()

    lacking = "currency" if stream == "orders" else "query"
    return (
        b"\n".join(
            [
                b"\xef\xbb\xbf" + line(ingestion_id=f"defects-{stream}-1"),
                line((lacking,), ingestion_id=f"defects-{stream}-2"),  # absent
                line(ingestion_id=f"defects-{stream}-3", **{lacking: None}),  # explicit null
                line(("ingestion_id", "session_id")),
                b"",
                line()[:40],  # truncated
                b"[1, 2]",
                b'{"ingestion_id": "caf\xe9"}',
                b'{"ingestion_id": "a\x00b"}',
                line(ingestion_id=f"defects-{stream}-4")[:-1] + b', "extra": 1}',
                line(ingestion_id=f"defects-{stream}-5"),
            ]
        )
        + b"\n"
    )


@dataclass(frozen=True)
class Medallion:
    warehouse: Path  # DuckDB file built by loaders + dbt
    spark_cfg: JobConfig  # where Spark read and wrote
    env: dict[str, str]  # the settings of the warehouse path (data folder, catalog, dbt's folders)


@pytest.fixture(scope="module")
def catalog_db(postgres: PostgresEndpoint) -> Iterator[PostgresEndpoint]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    yield PostgresEndpoint(postgres.host, postgres.port, postgres.user, name, postgres.password, postgres.external)
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="module")
def medallion(tmp_path_factory: pytest.TempPathFactory, catalog_db: PostgresEndpoint, spark: SparkSession) -> Medallion:
    root = tmp_path_factory.mktemp("parity")
    data = root / "data"
    generate(SAMPLE, data / "app.db", data / "landing", catalog_db.url())
    for stream in BRONZE_FIELDS:
        folder = sorted((data / "landing" / stream).glob("dt=*"))[-1]
        (folder / "zz-defects.jsonl").write_bytes(_defects(stream, folder.name.removeprefix("dt=")))
    env = {
        "ROUNDTRIP_DATA_DIR": str(data),
        "ROUNDTRIP_DUCKDB_PATH": str(data / "warehouse.duckdb"),
        "ROUNDTRIP_LANDING_PATH": str(data / "landing"),
        "ROUNDTRIP_APP_DB": str(data / "app.db"),
        "ROUNDTRIP_CATALOG_URL": catalog_db.url(),
        "ROUNDTRIP_DUCKDB_EXTENSION_DIR": str(PROJECT_ROOT / ".duckdb_extensions"),
        "ROUNDTRIP_TARGET": "duckdb",
        "DBT_TARGET_PATH": str(root / "target"),
        "DBT_LOG_PATH": str(root / "logs"),
    }
    auto.run_warehouse("duckdb", env)

    cfg = JobConfig(
        landing=str(data / "landing"),
        output=str(root / "spark"),
        catalog=CatalogSource.from_postgres_url(catalog_db.url()),  # the production path: JDBC
    )
    bronze_to_silver.run(spark, cfg)
    silver_to_gold.run(spark, cfg)
    return Medallion(data / "warehouse.duckdb", cfg, env)


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path), read_only=True)
    con.execute("set TimeZone = 'UTC'")
    return con


# DuckDB type -> the Spark type the same column must have
_SIMPLE_TYPES = {
    "VARCHAR": T.StringType(),
    "BIGINT": T.LongType(),
    "INTEGER": T.IntegerType(),
    "BOOLEAN": T.BooleanType(),
    "DATE": T.DateType(),
    "TIMESTAMP": T.TimestampNTZType(),
    "DOUBLE": T.DoubleType(),
}


def _spark_type(duck_type: str) -> T.DataType:
    decimal = re.fullmatch(r"DECIMAL\((\d+),(\d+)\)", duck_type)
    if decimal:
        return T.DecimalType(int(decimal[1]), int(decimal[2]))
    if duck_type not in _SIMPLE_TYPES:
        raise AssertionError(f"no Spark counterpart declared for DuckDB type {duck_type}")
    return _SIMPLE_TYPES[duck_type]


# Silver's lineage is the same in both engines (each record's landing file and physical line),
# except its time: the loader records when it loaded a file, Spark when the file landed.
ENGINE_SPECIFIC = ("loaded_at",)


def _contract_columns(con: duckdb.DuckDBPyConnection, layer: str, table: str) -> str:
    names = [n for n, *_ in con.execute(f"describe {layer}.{table}").fetchall()]
    return ", ".join(f'"{n}"' for n in names if n not in ENGINE_SPECIFIC)


def duckdb_frame(spark: SparkSession, con: duckdb.DuckDBPyConnection, relation: str) -> DataFrame:
    """A DuckDB relation as a Spark frame, each column typed by ``_spark_type`` of its DuckDB type."""
    described = con.execute(f"describe select * from {relation}").fetchall()
    rows = con.execute(f"select * from {relation}").to_arrow_table().to_pylist()
    schema = T.StructType([T.StructField(name, _spark_type(type_)) for name, type_, *_ in described])
    return spark.createDataFrame([tuple(r.values()) for r in rows], schema)


# ---------------------------------------------------------------- premise


def test_sample_has_every_defect_kind(medallion: Medallion) -> None:
    con = _connect(medallion.warehouse)
    found = con.execute(
        """
        with copies as (
            select ingestion_id, count(*) as n, count(distinct ingested_at) as instants,
                   count(distinct regexp_extract(_source_file, 'dt=([0-9-]+)', 1)) as folders
            from bronze.orders where ingestion_id is not null group by all
        )
        select
            (select count(*) from copies where n > 1),
            (select count(*) from copies where instants < n),
            (select count(*) from copies where folders > 1),
            (select count(*) from bronze.orders where ingestion_id is null),
            (select count(*) from bronze.orders where order_id is null),
            (select count(*) from bronze.orders where user_id is null),
            (select count(*) from bronze.orders where item_id is null),
            (select count(*) from bronze.orders where quantity is null or cast(quantity as int) <= 0),
            (select count(*) from bronze.orders where unit_price is null or cast(unit_price as decimal(12, 2)) <= 0),
            (select count(*) from bronze.orders where cast(unit_price as decimal(12, 2)) >= 10000),
            (select count(*) from bronze.orders where cast(item_id as bigint) not in (select item_id from raw_catalog.items)),
            (select count(*) from bronze.orders where regexp_matches(event_ts, '[+-][0-9]{2}:[0-9]{2}$')),
            (select count(*) from bronze.clicks where event_type is null),
            (select count(*) from bronze.clicks where query is not null and query <> regexp_replace(query, '[^\\x00-\\x7F]', '', 'g'))
        """
    ).fetchone()
    names = (
        "redelivered",
        "redelivered with the same ingested_at",
        "copies in different dt folders",
        "null ingestion_id",
        "null order_id",
        "null user_id",
        "null item_id",
        "bad quantity",
        "zero, negative or null price",
        "price >= 10000",
        "unknown item",
        "offset timestamps",
        "null event_type",
        "unicode queries",
    )
    assert found is not None
    assert {name: count for name, count in zip(names, found) if count == 0} == {}
    timestamps = {
        r[0]
        for r in con.execute("select event_ts from bronze.orders union select event_ts from bronze.clicks").fetchall()
    }
    assert {t for t in BAD_TIMESTAMPS if t not in timestamps} == set(), "every bad timestamp shape is present"
    assert None in timestamps
    types = {r[0] for r in con.execute("select distinct event_type from bronze.clicks").fetchall()}
    assert {t for t in INVALID_EVENT_TYPES if t not in types} == set()
    for stream in BRONZE_FIELDS:  # records that lack fields, and lines that are not records
        missing = con.execute(f"select count(*) from bronze.{stream} where _missing_fields is not null").fetchone()
        held = con.execute(
            f"select count(*) from _roundtrip.file_quarantine where stream = '{stream}' and source_line is not null"
        ).fetchone()
        assert (missing, held) == ((2,), (5,)), stream


# ---------------------------------------------------------------- bronze


# The warehouse's file loader lets DuckDB's JSON reader detect timestamp columns: when every
# ingested_at of a file has one shape, it arrives in bronze re-rendered ('2026-11-20T17:47:27.655Z'
# becomes '2026-11-20 17:47:27.655'). Spark keeps the text as sent. Both are the same UTC instant,
# which is what silver uses; that is what is compared for this field.
RE_RENDERED_BY_LOADER = ("ingested_at",)


@pytest.mark.parametrize(
    ("stream", "fields"), [("orders", bronze_to_silver.ORDER_FIELDS), ("clicks", bronze_to_silver.CLICK_FIELDS)]
)
def test_bronze_text_is_identical(
    medallion: Medallion, spark: SparkSession, stream: str, fields: tuple[str, ...]
) -> None:
    """Every field of every record as the same text in both engines (JSON numbers included),
    and the same `_missing_fields`; the lines the loader held back are no record for Spark."""
    cfg = medallion.spark_cfg
    from_spark = storage.read_bronze(spark, cfg.bronze_path(stream), cfg.fmt, fields)
    from_duckdb = duckdb_frame(
        spark, _connect(medallion.warehouse), f"(select {', '.join(fields)}, _missing_fields from bronze.{stream})"
    )

    def comparable(df: DataFrame) -> DataFrame:
        return df.select(
            *[parse_iso_timestamp(F.col(f)).alias(f) if f in RE_RENDERED_BY_LOADER else f for f in fields],
            storage.MISSING_FIELDS,
        )

    assertDataFrameEqual(comparable(from_spark), comparable(from_duckdb))


# ---------------------------------------------------------------- silver and gold


@pytest.mark.parametrize("table", list(TABLES))
def test_spark_table_equals_dbt_table(medallion: Medallion, spark: SparkSession, table: str) -> None:
    layer = TABLES[table]
    con = _connect(medallion.warehouse)
    expected = duckdb_frame(spark, con, f"(select {_contract_columns(con, layer, table)} from {layer}.{table})")
    actual = storage.read_table(spark, medallion.spark_cfg.table_path(layer, table))
    assert sorted(c for c in actual.columns if c not in ENGINE_SPECIFIC) == sorted(expected.columns)
    assert expected.count() > 0
    assertDataFrameEqual(actual.select(*expected.columns), expected)


@pytest.mark.parametrize("table", list(TABLES))
def test_duckdb_reads_spark_parquet_like_the_dbt_table(medallion: Medallion, table: str) -> None:
    """What a dbt source over Spark's Parquet would see: the same types and the same rows."""
    layer = TABLES[table]
    con = _connect(medallion.warehouse)
    spark_rel = f"read_parquet('{medallion.spark_cfg.table_path(layer, table)}/**/*.parquet', hive_partitioning = true)"
    dbt_types = {n: t for n, t, *_ in con.execute(f"describe {layer}.{table}").fetchall()}
    spark_types = {n: t for n, t, *_ in con.execute(f"describe select * from {spark_rel}").fetchall()}
    assert spark_types == dbt_types
    columns = ", ".join(f'"{n}"' for n in dbt_types if n not in ENGINE_SPECIFIC)
    for left, right in ((f"{layer}.{table}", spark_rel), (spark_rel, f"{layer}.{table}")):
        extra = con.execute(
            f"select * from (select {columns} from {left} except all select {columns} from {right}) limit 5"
        )
        assert extra.fetchall() == [], f"rows of {left} missing from {right}"


def test_one_day_run_gives_dbt_rows_for_that_day(medallion: Medallion, spark: SparkSession, tmp_path: Path) -> None:
    """``--date D`` on a table that holds the other days: silver for D from all of bronze (copies
    of D's records landed in other dt folders), gold for D from all of silver."""
    day = date(2026, 11, 17)
    con = _connect(medallion.warehouse)
    crossing = con.execute(
        """select count(*) from bronze.orders o
           where left(event_ts, 10) = ? and ingestion_id in (
               select ingestion_id from bronze.orders group by 1 having count(distinct _source_file) > 1)""",
        [str(day)],
    ).fetchone()
    assert crossing and crossing[0] > 0, "some records of the day have copies in another landing folder"

    full = medallion.spark_cfg
    cfg = replace(full, output=str(tmp_path / "spark"), window=DateWindow(day, day))
    shutil.copytree(Path(full.output) / "silver", Path(cfg.output) / "silver")  # the history a daily run finds
    for table in bronze_to_silver.TABLES:  # this day's silver is the one-day run's own
        shutil.rmtree(Path(cfg.table_path("silver", table)) / f"event_date={day}")
    bronze_to_silver.run(spark, cfg)
    silver_to_gold.run(spark, cfg)

    for table, layer in TABLES.items():
        if table == "hourly_order_patterns":  # spans every date: replaced whole by each run
            where = "true"
        elif layer == "silver":
            where = f"event_date = date '{day}' or event_date is null"
        else:
            where = f"event_date = date '{day}'"
        expected = duckdb_frame(
            spark, con, f"(select {_contract_columns(con, layer, table)} from {layer}.{table} where {where})"
        )
        actual = storage.read_table(spark, cfg.table_path(layer, table)).where(where)
        assert expected.count() > 0, table
        assertDataFrameEqual(actual.select(*expected.columns), expected)


# ---------------------------------------------------------------- the switch: marts over Spark's tables


def _models(target_path: Path) -> dict[str, tuple[str, str]]:
    """Every enabled model of a build: name -> (schema, relation name)."""
    manifest = json.loads((target_path / "manifest.json").read_text())
    return {
        n["name"]: (n["schema"], n["alias"])
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and n["config"]["materialized"] != "ephemeral"
    }


def test_marts_from_spark_silver_equal_marts_from_dbt_silver(medallion: Medallion, tmp_path: Path) -> None:
    """medallion_engine spark, the path of `medallion-auto` above its threshold: the dimensions
    through the loaders, then `dbt build` of the same model files over Spark's silver and gold.
    Every model downstream of them (intermediate, marts, serving) equals the dbt build's, row for
    row, and every test of the build passed (the data tests of silver and gold on Spark's tables)."""
    env = {
        **medallion.env,
        "ROUNDTRIP_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "DBT_TARGET_PATH": str(tmp_path / "target"),
        "DBT_LOG_PATH": str(tmp_path / "logs"),
    }
    steps = auto.run_marts("duckdb", medallion.spark_cfg.output, env)
    assert [step["step"] for step in steps] == ["loaders sqlite", "loaders sql", "dbt build"]

    results = json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]
    failed = [r["unique_id"] for r in results if r["status"] not in ("success", "pass", "no-op")]  # no-op: exposures
    assert failed == []
    tested = {r["unique_id"].split(".")[2] for r in results if r["unique_id"].startswith("test.")}
    assert any("orders_clean" in t for t in tested) and any("daily_gmv_metrics" in t for t in tested)

    models = _models(tmp_path / "target")
    spark_built = {name for name, (schema, _) in models.items() if schema in ("silver", "gold")}
    assert spark_built == set(TABLES), "silver and gold read Spark's tables; staging of the events is not built"
    assert models == {
        name: rel for name, rel in _models(Path(medallion.env["DBT_TARGET_PATH"])).items() if name in models
    }
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    con.execute("set TimeZone = 'UTC'")
    con.execute(f"attach '{medallion.warehouse}' as dbt_built (read_only)")
    compared = 0
    for schema, relation in sorted(models.values()):
        names = [n for n, *_ in con.execute(f'describe "{schema}"."{relation}"').fetchall()]
        assert names == [n for n, *_ in con.execute(f'describe dbt_built."{schema}"."{relation}"').fetchall()]
        columns = ", ".join(f'"{n}"' for n in names if n not in ENGINE_SPECIFIC)
        ours, theirs = f'"{schema}"."{relation}"', f'dbt_built."{schema}"."{relation}"'
        count = con.execute(f"select count(*) from {ours}").fetchone()
        assert count and count[0] > 0, relation
        for left, right in ((ours, theirs), (theirs, ours)):
            extra = con.execute(f"select {columns} from {left} except all select {columns} from {right} limit 3")
            assert extra.fetchall() == [], f"{schema}.{relation}: rows of one build missing from the other"
        compared += 1
    assert compared == len(models) > len(TABLES)


def test_on_a_postgres_warehouse_the_marts_read_spark_tables_published_there(
    medallion: Medallion, spark: SparkSession, pg_database: PostgresEndpoint, tmp_path: Path
) -> None:
    """Postgres reads no Parquet: `spark_jobs publish` copies Spark's tables into the warehouse
    (spark_silver, spark_gold), then the same `dbt build` over them gives, in every model, the
    rows of the dbt build on DuckDB."""
    from spark_jobs import publish
    from tests.dbt_support import Relation, duckdb_relation_rows, postgres_relation_rows

    cfg = medallion.spark_cfg
    published = {row["table"]: row["rows"] for row in publish.run(spark, cfg, pg_database.url())}
    assert published == {
        f"spark_{layer}.{table}": storage.read_table(spark, cfg.table_path(layer, table)).count()
        for table, layer in TABLES.items()
    }
    env = {
        **medallion.env,
        "ROUNDTRIP_WAREHOUSE_URL": pg_database.url(),
        "DBT_TARGET_PATH": str(tmp_path / "target"),
        "DBT_LOG_PATH": str(tmp_path / "logs"),
    }
    auto.run_marts("postgres", cfg.output, env)

    built = [Relation("model", name, *rel) for name, rel in _models(tmp_path / "target" / "postgres").items()]
    assert {r.name for r in built if r.schema in ("silver", "gold")} == set(TABLES)
    for relation in built:
        pg_columns, pg_rows = postgres_relation_rows(pg_database.url(), relation)
        duck_columns, duck_rows = duckdb_relation_rows(medallion.warehouse, relation)
        assert pg_columns == duck_columns, relation.name
        # loaded_at: when each load (or Spark) saw the rows, here and in the dimensions' staging
        keep = [i for i, c in enumerate(pg_columns) if c not in ENGINE_SPECIFIC]
        pg_rows, duck_rows = (
            sorted((tuple(r[i] for i in keep) for r in rows), key=repr) for rows in (pg_rows, duck_rows)
        )
        assert pg_rows == duck_rows and pg_rows, relation.name
