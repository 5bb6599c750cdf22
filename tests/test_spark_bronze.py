"""Spark reads CSV and Parquet landing files as the same text the warehouse's file loader keeps.

(JSON lines are compared in test_spark_parity.py, on the parity data set.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.dev.sample_data import DefectRates, SampleConfig, generate
from spark_jobs import storage
from spark_jobs.bronze_to_silver import CLICK_FIELDS, ORDER_FIELDS

pytestmark = [pytest.mark.spark, pytest.mark.filterwarnings("ignore::FutureWarning")]

SAMPLE = SampleConfig(
    seed=3, users=80, items=40, orders=400, clicks=800, days=2, defects=DefectRates(bad_timestamp=0.05)
)
STREAMS = {"orders": ORDER_FIELDS, "clicks": CLICK_FIELDS}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_bronze_text_is_identical(spark: SparkSession, tmp_path: Path, fmt: str) -> None:
    landing = tmp_path / "landing"
    generate(SAMPLE, tmp_path / "app.db", landing, None, fmt)
    loaders_yml = tmp_path / "loaders.yml"
    loaders_yml.write_text(
        yaml.safe_dump(
            {
                "files": {
                    stream: {"path": str(landing / stream), "format": fmt, "table": stream, "columns": list(fields)}
                    for stream, fields in STREAMS.items()
                }
            }
        )
    )
    warehouse = tmp_path / "warehouse.duckdb"
    env = {
        **os.environ,
        "ROUNDTRIP_DUCKDB_PATH": str(warehouse),
        "ROUNDTRIP_DUCKDB_EXTENSION_DIR": str(PROJECT_ROOT / ".duckdb_extensions"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "loaders", "files", "--config", str(loaders_yml), "--target", "duckdb"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    con = duckdb.connect(str(warehouse), read_only=True)
    for stream, fields in STREAMS.items():
        rows = con.execute(f"select {', '.join(fields)}, _missing_fields from bronze.{stream}").fetchall()
        assert rows and any(None in row for row in rows), "NULLs are part of the comparison"
        if fmt == "parquet":  # CSV cannot tell '' from NULL: DuckDB and Spark both read "" as NULL
            assert any("" in row for row in rows), "so are empty strings (a bad timestamp is '')"
        expected = spark.createDataFrame(rows, ", ".join(f"{f} string" for f in (*fields, "_missing_fields")))
        bronze = storage.read_bronze(spark, str(landing / stream), fmt, fields)  # type: ignore[arg-type]
        assertDataFrameEqual(bronze.select(*fields, storage.MISSING_FIELDS), expected)
        # the loader's lineage: the file as a plain path, the row (Parquet) or record (CSV) number
        lineage = con.execute(f"select _source_file, _source_line from bronze.{stream}").fetchall()
        assert len({line for _, line in lineage}) > 1
        assertDataFrameEqual(
            bronze.select("_source_file", "_source_line"),
            spark.createDataFrame(lineage, "_source_file string, _source_line bigint"),
        )


# the loader reads 'Order ID' into order_id (names are sanitized); Spark matches names exactly
SANITIZED_BY_THE_LOADER_ONLY = {"names-that-sanitize-alike"}


def test_json_lines_the_loader_holds_back_are_not_records_for_spark_either(spark: SparkSession, tmp_path: Path) -> None:
    """The bad-input corpus of the loader (tests/test_loaders_bad_input.py), JSON lines: Spark
    reads exactly the records the loader loads, with the same fields and `_missing_fields`."""
    from tests.test_loaders_bad_input import COLUMNS, CORPUS

    kinds = [k for k in CORPUS if k.stream == "jsonl" and k.name not in SANITIZED_BY_THE_LOADER_ONLY]
    for kind in kinds:
        (tmp_path / kind.file).write_bytes(kind.content)
    rows = storage.read_bronze(spark, str(tmp_path), "jsonl", COLUMNS).collect()

    got = sorted(((r["order_id"] or ""), r[storage.MISSING_FIELDS]) for r in rows)
    expected = sorted(
        ((order_id or ""), kind.missing.get(order_id or "")) for kind in kinds for _, order_id in kind.good
    )
    assert got == expected
    by_id = {r["order_id"] or "": r for r in rows}
    for kind in kinds:
        for order_id, values in kind.values.items():
            assert {c: by_id[order_id][c] for c in values} == values, (kind.name, order_id)


def test_lines_keep_their_physical_number_when_spark_splits_a_file(spark: SparkSession, tmp_path: Path) -> None:
    """A file read in many splits (a tiny maxPartitionBytes): every record keeps the number of
    its physical line, blank, non-record and CRLF lines counted, as the loader numbers them."""
    lines = []
    for n in range(1, 3001):
        if n % 97 == 0:
            lines.append(b"")  # blank: counted, not a record
        elif n % 89 == 0:
            lines.append(b"not json")  # held back by the loader, skipped here
        else:
            lines.append(json.dumps({"order_id": f"line-{n}", "user_id": "é" * (n % 7)}).encode() + b"\r" * (n % 2))
    landing = tmp_path / "orders" / "dt=2026-11-20"
    landing.mkdir(parents=True)
    (landing / "big file+1.jsonl").write_bytes(b"\n".join(lines))  # no line break at the end
    (landing / "small.jsonl").write_bytes(b'\n{"order_id": "small-2"}\n')

    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "4096")
    try:
        bronze = storage.read_bronze(spark, str(tmp_path / "orders"), "jsonl", ("order_id", "user_id"))
        rows = bronze.select("order_id", storage.SOURCE_FILE, storage.SOURCE_LINE).collect()
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", previous)
    assert len({r[storage.SOURCE_FILE] for r in rows}) == 2
    numbered = {r["order_id"]: (Path(r[storage.SOURCE_FILE]).name, r[storage.SOURCE_LINE]) for r in rows}
    expected = {f"line-{n}": ("big file+1.jsonl", n) for n in range(1, 3001) if n % 97 and n % 89}
    assert numbered == {**expected, "small-2": ("small.jsonl", 2)}
    assert {r[storage.SOURCE_FILE] for r in rows} == {str(landing / "big file+1.jsonl"), str(landing / "small.jsonl")}
