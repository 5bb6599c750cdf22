"""Idempotent runs per event_date: a re-run replaces its own partitions and nothing else."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from roundtrip.dev.sample_data import DefectRates, SampleConfig, generate
from roundtrip.dev.sample_data.model import items_table
from spark_jobs import bronze_to_silver, silver_to_gold, storage
from spark_jobs.config import CatalogSource, DateWindow, JobConfig
from spark_jobs.errors import SparkJobError

pytestmark = [pytest.mark.spark, pytest.mark.filterwarnings("ignore::FutureWarning")]

SAMPLE = SampleConfig(
    seed=5,
    users=120,
    items=60,
    orders=600,
    clicks=1_200,
    days=4,
    end_date=date(2026, 11, 20),
    defects=DefectRates(redelivered=0.08, redelivered_same_time=0.02, bad_timestamp=0.03),
)
BACKFILL = DateWindow(date(2026, 11, 17), date(2026, 11, 19))
RERUN = DateWindow(date(2026, 11, 18), date(2026, 11, 18))
SILVER, GOLD = bronze_to_silver.TABLES, silver_to_gold.PARTITIONED


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Landing files and a Parquet copy of the catalog (no Postgres needed here)."""
    root = tmp_path_factory.mktemp("partitions")
    generate(SAMPLE, root / "app.db", root / "landing", None)
    pq.write_table(items_table(SAMPLE), root / "items.parquet")
    return root / "landing", root / "items.parquet"


def _config(landing: tuple[Path, Path], output: Path, window: DateWindow) -> JobConfig:
    return JobConfig(
        landing=str(landing[0]), output=str(output), catalog=CatalogSource(parquet_path=str(landing[1])), window=window
    )


def _medallion(spark: SparkSession, cfg: JobConfig) -> None:
    bronze_to_silver.run(spark, cfg)
    silver_to_gold.run(spark, cfg)


def _files(output: Path) -> dict[str, str]:
    """Every data file of every partition -> sha256 of its bytes."""
    return {
        str(p.relative_to(output)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in output.glob("*/*/event_date=*/*")
        if p.is_file()
    }


def _partitions(output: Path, layer: str, table: str) -> set[str]:
    return {p.name.removeprefix("event_date=") for p in (output / layer / table).glob("event_date=*")}


def _rows(spark: SparkSession, output: Path, layer: str, table: str, where: F.Column) -> DataFrame:
    return storage.read_table(spark, str(output / layer / table)).where(where)


def test_backfill_then_rerun_of_one_day_leaves_other_days_byte_for_byte(
    spark: SparkSession, landing: tuple[Path, Path], tmp_path: Path
) -> None:
    output = tmp_path / "spark"
    _medallion(spark, _config(landing, output, BACKFILL))
    days = {"2026-11-17", "2026-11-18", "2026-11-19"}
    assert {t: _partitions(output, "silver", t) for t in SILVER} == {t: days | {storage.UNDATED} for t in SILVER}
    assert {t: _partitions(output, "gold", t) for t in GOLD} == {t: days for t in GOLD}

    rerun_day = F.col("event_date") == F.lit(RERUN.start)
    before_files = _files(output)
    before_rows: dict[str, list[Row]] = {
        f"{layer}.{t}": _rows(spark, output, layer, t, rerun_day).collect()
        for layer, tables in (("silver", SILVER), ("gold", GOLD))
        for t in tables
    }
    _medallion(spark, _config(landing, output, RERUN))
    after_files = _files(output)

    def other_days(files: dict[str, str]) -> dict[str, str]:
        """Partitions of the days not re-run; the undated silver rows are recomputed by every run."""
        return {k: v for k, v in files.items() if "event_date=2026-11-18" not in k and storage.UNDATED not in k}

    assert other_days(before_files), "the backfill wrote files for the other days"
    assert other_days(after_files) == other_days(before_files)
    rewritten_before = {k for k in before_files if "event_date=2026-11-18" in k}
    rewritten_after = {k for k in after_files if "event_date=2026-11-18" in k}
    assert rewritten_before and rewritten_after and not rewritten_before & rewritten_after, "the day was rewritten"
    for name, rows in before_rows.items():
        layer, table = name.split(".")
        assert rows, f"{name} has rows for the re-run day"
        assertDataFrameEqual(_rows(spark, output, layer, table, rerun_day), rows)


def test_rerun_removes_a_day_the_input_no_longer_has(
    spark: SparkSession, landing: tuple[Path, Path], tmp_path: Path
) -> None:
    """Dynamic overwrite alone would keep a day that now has no rows; the run removes it."""
    output = tmp_path / "spark"
    bronze_to_silver.run(spark, _config(landing, output, DateWindow(date(2026, 11, 17), date(2026, 11, 18))))
    kept = {k: v for k, v in _files(output).items() if "event_date=2026-11-17" in k}

    empty = tmp_path / "empty-landing"
    for stream in ("orders", "clicks"):
        (empty / stream).mkdir(parents=True)
    bronze_to_silver.run(spark, _config((empty, landing[1]), output, RERUN))

    assert {t: _partitions(output, "silver", t) for t in SILVER} == {t: {"2026-11-17"} for t in SILVER}
    assert {k: v for k, v in _files(output).items() if "event_date=2026-11-17" in k} == kept


def test_a_line_that_is_no_record_is_skipped_as_the_loader_holds_it_back(
    spark: SparkSession, landing: tuple[Path, Path], tmp_path: Path
) -> None:
    """A truncated line or an array line stops neither the loader (it holds them back in its
    quarantine) nor Spark: the day's other records are written, and only those."""
    broken = tmp_path / "broken-landing"
    kept = {}
    for stream in ("orders", "clicks"):
        folder = broken / stream / "dt=2026-11-18"
        folder.mkdir(parents=True)
        good = next((landing[0] / stream).glob("dt=2026-11-18/*.jsonl")).read_text().splitlines()[0]
        kept[stream] = json.loads(good)["ingestion_id"]
        (folder / f"{stream}-00000.jsonl").write_text('{"ingestion_id": "x-9-9", "order_id": \n' + good + "\n[1, 2]\n")
    cfg = replace(_config(landing, tmp_path / "spark", RERUN), landing=str(broken))

    bronze_to_silver.run(spark, cfg)

    for stream, table in (("orders", "orders_clean"), ("clicks", "clicks_clean")):
        rows = storage.read_table(spark, cfg.table_path("silver", table)).select("ingestion_id").collect()
        assert [r.ingestion_id for r in rows] == [kept[stream]], table


def test_a_malformed_parquet_file_fails_naming_the_file_and_keeps_the_table(
    spark: SparkSession, landing: tuple[Path, Path], tmp_path: Path
) -> None:
    output = tmp_path / "spark"
    cfg = _config(landing, output, RERUN)
    bronze_to_silver.run(spark, cfg)
    before = _files(output)

    broken = tmp_path / "broken-landing"
    for stream in ("orders", "clicks"):
        (broken / stream / "dt=2026-11-18").mkdir(parents=True)
        (broken / stream / "dt=2026-11-18" / f"{stream}-00000.parquet").write_bytes(b"PAR1 not Parquet PAR1")
    bad_file = broken / "orders" / "dt=2026-11-18" / "orders-00000.parquet"

    with pytest.raises(SparkJobError, match=re.escape(bad_file.name)):
        bronze_to_silver.run(spark, replace(cfg, landing=str(broken), fmt="parquet"))
    assert _files(output) == before
