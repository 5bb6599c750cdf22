"""One rule for edge timestamps (docs/contract.md, "Timestamps"), the same on DuckDB, Postgres
and Spark: the dbt macro ``parse_iso_timestamp`` run by ``dbt show`` on the two warehouses, and
``spark_jobs.expressions.parse_iso_timestamp``, against values worked out from the rule."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from roundtrip.core.dbt import dbt_command
from roundtrip.core.paths import PROJECT_ROOT
from tests.dbt_support import base_environment

pytestmark = [pytest.mark.spark, pytest.mark.postgres, pytest.mark.filterwarnings("ignore::FutureWarning")]

D = datetime.fromisoformat
EDGES: list[tuple[str, datetime | None]] = [
    ("2026-11-20T10:00:00", D("2026-11-20 10:00:00")),  # no offset: UTC
    ("2026-11-20 10:00:00-00:00", D("2026-11-20 10:00:00")),
    ("2026-11-20T10:00:00.5+01:00", D("2026-11-20 09:00:00.5")),
    ("2026-11-20T24:00:00Z", None),  # ISO's "end of the day": not an hour here (Postgres and DuckDB took it)
    ("2026-11-20T24:00:00", None),
    ("2026-11-20T23:59:60Z", None),  # a leap second (Postgres rolled it over)
    ("2026-11-20T10:60:00Z", None),
    ("0000-01-01T00:00:00Z", None),  # year 0 (DuckDB: 1 BC, Spark: year 0, Postgres: refused)
    ("0001-01-01T00:00:00Z", D("0001-01-01 00:00:00")),
    ("0001-01-01T00:30:00+01:00", None),  # the UTC instant falls in year 0
    ("0001-01-01T00:30:00-01:00", D("0001-01-01 01:30:00")),
    ("9999-12-31T23:59:59.999999Z", D("9999-12-31 23:59:59.999999")),
    ("9999-12-31T23:00:00-05:00", None),  # the UTC instant falls in year 10000
    ("2026-02-30T10:00:00Z", None),  # not a real day
    ("2023-02-29T00:00:00Z", None),
    ("2024-02-29T00:00:00Z", D("2024-02-29 00:00:00")),
    ("2026-04-31T00:00:00Z", None),
    ("2026-00-10T00:00:00Z", None),
    ("2026-11-00T00:00:00Z", None),
    ("2026-11-20T10:00:00+14:00", D("2026-11-19 20:00:00")),
    ("2026-11-20T10:00:00+14:59", D("2026-11-19 19:01:00")),
    ("2026-11-20T10:00:00-14:59", D("2026-11-21 00:59:00")),
    ("2026-11-20T10:00:00+15:00", None),  # past ±14:59 (Postgres took up to 15:59, the others to 18:00)
    ("2026-11-20T10:00:00+18:00", None),
    ("2026-11-20T10:00:00+05:60", None),  # (DuckDB read it as +06:00)
    ("2026-11-20T10:00:00.1234567Z", None),
    ("2026-11-20T10:00:00z", None),
    ("2026-11-20", None),
    ("", None),
    (None, None),
]


def _values_sql() -> str:
    rows = ", ".join("(null)" if t is None else "('" + t + "')" for t, _ in EDGES)
    return f"select t, {{{{ parse_iso_timestamp('t') }}}} as ts from (values {rows}) as cases (t)"


def _dbt_show(target: str, tmp_path: Path, env_extra: dict[str, str]) -> dict[str | None, datetime | None]:
    env = base_environment(tmp_path / "warehouse.duckdb", env_extra)
    command = dbt_command(
        ["--no-use-colors", "--quiet", "show", "--inline", _values_sql(), "--output", "json", "--limit", "1000"],
        target=target,
        target_path=tmp_path / f"target-{target}",
    )
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    shown = json.loads(done.stdout[done.stdout.index("{") :])["show"]
    return {row["t"]: (D(row["ts"]) if row["ts"] else None) for row in shown}


def test_duckdb_postgres_and_spark_read_edge_timestamps_alike(
    tmp_path: Path, spark: object, pg_database: object
) -> None:
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from spark_jobs.expressions import parse_iso_timestamp

    expected = dict(EDGES)
    duckdb_rows = _dbt_show("duckdb", tmp_path, {})
    postgres_rows = _dbt_show("postgres", tmp_path, pg_database.dbt_env())  # type: ignore[attr-defined]
    assert isinstance(spark, SparkSession)
    frame = spark.createDataFrame([(t,) for t, _ in EDGES], "t string")
    spark_rows = {r["t"]: r["ts"] for r in frame.select("t", parse_iso_timestamp(F.col("t")).alias("ts")).collect()}

    assert duckdb_rows == expected
    assert postgres_rows == expected
    assert spark_rows == expected
