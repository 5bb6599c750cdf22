"""`make demo ENGINE=spark` and `make demo TARGET=bigquery`: the circle closes past one machine.

- ENGINE=spark, on a standalone cluster started here from pyspark's `spark-class` (a master and
  one worker on loopback, stopped by pid): Spark writes silver and gold, dbt builds the marts over
  them (medallion_engine spark), the syncs send them; Spark's tables equal a local-mode run of the
  same files, and every sync's destination holds what its mart holds.
- TARGET=bigquery: the whole circle on the BigQuery emulator, and the summary says what the
  emulator could not build.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import psycopg
import pytest

from roundtrip.dev.services import PostgresEndpoint, RedisEndpoint
from tests.test_demo import _demo as run_demo_cli

SIZES = ["--users", "200", "--items", "100", "--orders", "1500", "--clicks", "3000", "--days", "6"]
SILVER_GOLD = {
    "silver": ("orders_clean", "clicks_clean"),
    "gold": ("daily_gmv_metrics", "item_performance", "user_funnel_metrics", "hourly_order_patterns"),
}


def _demo(tmp_path: Path, extra_env: dict[str, str], *args: str) -> dict:  # type: ignore[type-arg]
    return run_demo_cli(tmp_path, extra_env, *args, sizes=SIZES, timeout=1200)


def _held_equals_marts(report: dict, layers: dict[tuple[str, str], int]) -> None:  # type: ignore[type-arg]
    syncs = {s["sync"]: s for s in report["syncs"]}
    assert syncs and all(s["status"] == "succeeded" and s["rejected"] == 0 for s in syncs.values())
    held = {d["sync"]: d["rows or keys"] for d in report["destinations"]}
    for sync, relation in (
        ("crm_user_segments", ("marts", "user_segments")),
        ("crm_email_queue", ("marts", "email_triggers")),
        ("serving_enriched_user", ("marts", "enriched_user")),
        ("reporting_daily_gmv", ("gold", "daily_gmv_metrics")),
    ):
        assert held[sync] == layers[relation] == syncs[sync]["inserted"] > 0, sync


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_demo_with_spark_on_a_standalone_cluster(
    tmp_path: Path, pg_database: PostgresEndpoint, redis_endpoint: RedisEndpoint, spark: object
) -> None:
    from pyspark.testing import assertDataFrameEqual

    from roundtrip.dev.spark_cluster import spark_cluster
    from spark_jobs import bronze_to_silver, silver_to_gold, storage
    from spark_jobs.config import CatalogSource, JobConfig

    servers = {"ROUNDTRIP_POSTGRES_URL": pg_database.url(), "ROUNDTRIP_REDIS_URL": redis_endpoint.url()}
    with spark_cluster(cores=2, memory="1g") as cluster:
        report = _demo(tmp_path, {**servers, **cluster.env()}, "--engine", "spark")
    assert report["engine"] == "spark"
    data = tmp_path / "data"

    # the warehouse: silver and gold are views over Spark's Parquet, the rest built by dbt over them
    con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    views = dict(con.execute("select schema_name || '.' || view_name, sql from duckdb_views()").fetchall())
    for layer, tables in SILVER_GOLD.items():
        for table in tables:
            assert f"{data / 'spark' / layer / table}/**/*.parquet" in views[f"{layer}.{table}"]
    assert not con.execute("select count(*) from information_schema.tables where table_schema = 'bronze'").fetchone()[0]
    layers = {(x["layer"], x["table"]): x["rows"] for x in report["layers"]}
    for (layer, table), rows in layers.items():
        assert con.execute(f'select count(*) from "{layer}"."{table}"').fetchone() == (rows,)
    spark_rows = {row["table"]: row["rows"] for row in report["spark"]}
    assert spark_rows["silver.orders_clean"] == layers[("silver", "orders_clean")] == report["generated"]["orders"]
    _held_equals_marts(report, layers)
    with psycopg.connect(pg_database.url()) as conn:
        segments = conn.execute("select user_id, segment from crm.user_segments order by 1").fetchall()
    assert segments == con.execute("select user_id, segment from marts.user_segments order by 1").fetchall()

    # the cluster's tables equal a local-mode run of the same files and catalog
    local = JobConfig(
        str(data / "landing"), str(tmp_path / "local"), CatalogSource.from_postgres_url(pg_database.url())
    )
    bronze_to_silver.run(spark, local)  # type: ignore[arg-type]
    silver_to_gold.run(spark, local)  # type: ignore[arg-type]
    for layer, tables in SILVER_GOLD.items():
        for table in tables:
            expected = storage.read_table(spark, local.table_path(layer, table))  # type: ignore[arg-type]
            assert expected.count() > 0
            assertDataFrameEqual(storage.read_table(spark, str(data / "spark" / layer / table)), expected)  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.bigquery
@pytest.mark.postgres
@pytest.mark.redis
def test_demo_on_the_bigquery_emulator_says_what_it_left_out(
    tmp_path: Path, pg_database: PostgresEndpoint, redis_endpoint: RedisEndpoint
) -> None:
    from roundtrip.dev.bigquery_emulator import DBT_GAPS

    servers = {"ROUNDTRIP_POSTGRES_URL": pg_database.url(), "ROUNDTRIP_REDIS_URL": redis_endpoint.url()}
    report = _demo(tmp_path, servers, "--target", "bigquery")
    assert [(g["left out"], g["why"]) for g in report["gaps"]] == list(DBT_GAPS)
    layers = {(x["layer"], x["table"]): x["rows"] for x in report["layers"]}
    assert layers[("silver", "orders_clean")] == layers[("bronze", "orders")] == report["generated"]["orders"]
    assert not [key for key in layers if key[0] == "serving"], "the emulator builds no materialized view"
    _held_equals_marts(report, layers)
    results = json.loads((tmp_path / "target" / "bigquery" / "run_results.json").read_text())["results"]
    ran = {r["unique_id"].split(".")[-1] for r in results}
    left_out = {selector for selector, _ in DBT_GAPS if not selector.startswith(("path:", "contracts"))}
    assert ran & left_out == set() and {"user_segments", "recommendations"} <= ran
    assert all(r["status"] in ("success", "pass", "no-op") for r in results)
