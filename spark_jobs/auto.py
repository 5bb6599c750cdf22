"""The ``auto`` engine: estimate the bronze volume, then run the medallion on Spark above a row
threshold and on the warehouse (loaders + ``dbt build``) below it.

The estimate is cheap on purpose: Parquet row counts come from file footers; for JSON lines and
CSV a sample of the files is read from the start (``SAMPLE_BYTES`` each) to learn the bytes per
record, and the total size of every file is divided by it. Files smaller than the sample are
counted exactly.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from roundtrip.core.paths import PROJECT_ROOT
from spark_jobs.config import BronzeFormat, JobConfig
from spark_jobs.errors import SparkJobError
from spark_jobs.landing import EXTENSIONS, STREAMS, filesystem

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

SAMPLE_BYTES = 1 << 20
SAMPLE_FILES = 8
Engine = Literal["spark", "warehouse"]


@dataclass(frozen=True)
class StreamEstimate:
    stream: str
    files: int
    bytes: int
    rows: int
    exact: bool  # every file counted, nothing extrapolated


@dataclass(frozen=True)
class Plan:
    engine: Engine
    rows: int
    threshold: int | None  # None: Spark is not chosen by size (local mode, no threshold set)
    reason: str


CLUSTER_THRESHOLD_ROWS = 20_000_000


def threshold_from_settings() -> int | None:
    """``ROUNDTRIP_SPARK_THRESHOLD_ROWS`` (a bad value is a ConfigError naming it). Unset: 20 M
    bronze rows when Spark runs on a cluster (``ROUNDTRIP_SPARK_MASTER``), and none in local
    mode: on one machine Spark took 2.3-4.2x DuckDB's time from 1 M to 10 M orders, growing faster
    (docs/spark.md, "Where Spark starts to pay"), so the warehouse builds the medallion."""
    from roundtrip.core.settings import load_settings

    settings = load_settings()
    if settings.spark_threshold_rows is not None:
        return settings.spark_threshold_rows
    return None if settings.spark_master.startswith("local") else CLUSTER_THRESHOLD_ROWS


def choose_engine(rows: int, threshold: int | None) -> Plan:
    if threshold is None:
        return Plan(
            "warehouse", rows, None,
            f"bronze ~{rows:,} rows; Spark would run in local mode, which on one machine is slower than the "
            "warehouse at every size measured (docs/spark.md): set ROUNDTRIP_SPARK_MASTER to a cluster, or "
            "ROUNDTRIP_SPARK_THRESHOLD_ROWS to choose Spark above it",
        )  # fmt: skip
    if threshold < 0:
        raise SparkJobError(f"the row threshold must be 0 or more, got {threshold}")
    if rows > threshold:
        return Plan("spark", rows, threshold, f"bronze ~{rows:,} rows is above the threshold of {threshold:,}")
    return Plan("warehouse", rows, threshold, f"bronze ~{rows:,} rows is within the threshold of {threshold:,}")


# ---------------------------------------------------------------- estimate


def estimate_stream(landing: str, stream: str, fmt: BronzeFormat) -> StreamEstimate:
    fs, root = filesystem(f"{landing.rstrip('/')}/{stream}")
    if not fs.exists(root):
        return StreamEstimate(stream, 0, 0, 0, True)
    files = sorted(
        (path, int(info.get("size") or 0))
        for path, info in fs.find(root, detail=True).items()
        if path.endswith(EXTENSIONS[fmt])
    )
    total_bytes = sum(size for _, size in files)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        rows = 0
        for path, _ in files:
            with fs.open(path, "rb") as handle:
                rows += pq.ParquetFile(handle).metadata.num_rows
        return StreamEstimate(stream, len(files), total_bytes, rows, True)

    # an even spread of at most SAMPLE_FILES files, each read from its start
    sample = files[:: -(-len(files) // SAMPLE_FILES)] if files else []
    counted_whole = len(sample) == len(files)
    header_bytes = body_bytes = body_rows = 0
    for path, size in sample:
        with fs.open(path, "rb") as handle:
            head = handle.read(SAMPLE_BYTES)
        if size > SAMPLE_BYTES:
            head = head[: head.rfind(b"\n") + 1]  # complete records only
            counted_whole = False
        if fmt == "csv":
            cut = head.find(b"\n") + 1
            header_bytes, head = header_bytes + cut, head[cut:]
        body_bytes += len(head)
        body_rows += head.count(b"\n") + (1 if head and not head.endswith(b"\n") else 0)
    if counted_whole:
        return StreamEstimate(stream, len(files), total_bytes, body_rows, True)
    if not body_rows:
        raise SparkJobError(
            f"{landing}/{stream}: cannot estimate rows (no record ends in the first {SAMPLE_BYTES} bytes)"
        )
    body_total = total_bytes - header_bytes / len(sample) * len(files)
    return StreamEstimate(stream, len(files), total_bytes, round(body_total * body_rows / body_bytes), False)


def estimate_bronze(landing: str, fmt: BronzeFormat) -> list[StreamEstimate]:
    return [estimate_stream(landing, stream, fmt) for stream in STREAMS]


def estimate_bigquery_sources(target: str, env: Mapping[str, str] | None = None) -> list[StreamEstimate]:
    """The rows the BigQuery sources of loaders.yml would load, as ``python -m loaders bigquery
    --estimate`` counts them (table metadata, or COUNT(*) with the filter and the watermark); in a
    subprocess, as spark_jobs runs every loader (it imports none)."""
    import json
    import os

    command = [sys.executable, "-m", "loaders", "bigquery", "--estimate", "--json", "--quiet", "--target", target]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if done.returncode != 0:
        problem = next((line for line in done.stderr.splitlines() if line.startswith("error:")), done.stderr.strip())
        raise SparkJobError(f"cannot estimate the BigQuery sources: {problem.removeprefix('error: ')}")
    found = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return [
        StreamEstimate(
            f"{e['source']} {e['bigquery_table']}", 0, 0, int(e["estimated_rows"]), e["counted_by"] == "count(*)"
        )
        for e in found
    ]


# ---------------------------------------------------------------- engines


def run_spark(cfg: JobConfig, spark: SparkSession | None = None) -> list[dict[str, object]]:
    """bronze_to_silver then silver_to_gold, for the same dates."""
    from spark_jobs import bronze_to_silver, silver_to_gold
    from spark_jobs.session import build_session

    spark = spark or build_session(app_name="roundtrip-medallion")
    return bronze_to_silver.run(spark, cfg) + silver_to_gold.run(spark, cfg)


HELD_BACK = 2  # the loaders' exit status when they loaded everything but held some input back
# the loaders of the dimensions the marts read besides the events: users (the app's SQLite) and
# the item catalog (the `sql` loader)
DIMENSION_LOADERS = ("sqlite", "sql")
MEDALLION_ENGINE_ENV, SPARK_OUTPUT_ENV, LANDING_FORMAT_ENV = (
    "ROUNDTRIP_MEDALLION_ENGINE",
    "ROUNDTRIP_SPARK_OUTPUT",
    "ROUNDTRIP_LANDING_FORMAT",
)


@dataclass(frozen=True)
class Step:
    name: str
    command: list[str]


def _loader(kind: str, target: str) -> Step:
    return Step(f"loaders {kind}", [sys.executable, "-m", "loaders", kind, "--target", target])


def _dbt_build(target: str) -> Step:
    """``make dbt-build``: the manifest where the syncs look for it (target/<target>/ beside
    duckdb's target/), and on the BigQuery emulator without what it cannot build."""
    return Step("dbt build", [sys.executable, "-m", "roundtrip", "dbt", "build", "--target", target])


def warehouse_steps(target: str, bigquery: bool = False) -> list[Step]:
    """What ``make load`` (and ``make load-bigquery`` with ``bigquery``) and ``make dbt-build``
    run: the medallion on the warehouse."""
    kinds = (*DIMENSION_LOADERS, "files", *(("bigquery",) if bigquery else ()))
    return [*(_loader(kind, target) for kind in kinds), _dbt_build(target)]


def marts_steps(target: str) -> list[Step]:
    """After Spark: the dimensions through the loaders, then ``dbt build`` reading Spark's
    silver and gold (medallion_engine spark) for everything downstream of them."""
    return [*(_loader(kind, target) for kind in DIMENSION_LOADERS), _dbt_build(target)]


def run_steps(steps: Sequence[Step], env: Mapping[str, str] | None = None) -> list[dict[str, object]]:
    """Each step as a subprocess of this environment (its output shows as it runs)."""
    import time

    from roundtrip.core.dbt import dbt_environment

    done = []
    for step in steps:
        started = time.perf_counter()
        log.info("running %s", step.name)
        completed = subprocess.run(step.command, cwd=PROJECT_ROOT, env=dbt_environment(env))
        if completed.returncode == HELD_BACK and step.name.startswith("loaders"):
            # the loader finished; lines it could not read wait in its quarantine (it said so)
            log.warning("`%s` held back some input (python -m loaders quarantine); going on", step.name)
        elif completed.returncode != 0:
            raise SparkJobError(f"`{step.name}` failed with exit code {completed.returncode} (see its output above)")
        done.append({"step": step.name, "seconds": round(time.perf_counter() - started, 2)})
    return done


def run_warehouse(
    target: str, env: Mapping[str, str] | None = None, fmt: str = "jsonl", bigquery: bool = False
) -> list[dict[str, object]]:
    """Loaders into the warehouse, then ``dbt build`` of the whole project (medallion_engine dbt:
    every model is rebuilt whole)."""
    engine = {MEDALLION_ENGINE_ENV: "dbt", LANDING_FORMAT_ENV: fmt}
    return run_steps(warehouse_steps(target, bigquery), {**(env or {}), **engine})


def run_marts(target: str, spark_output: str, env: Mapping[str, str] | None = None) -> list[dict[str, object]]:
    """The dimensions, then ``dbt build`` over Spark's tables at ``spark_output`` (on Postgres,
    publish them into the warehouse first: ``spark_jobs.publish``)."""
    engine = {MEDALLION_ENGINE_ENV: "spark", SPARK_OUTPUT_ENV: spark_output}
    return run_steps(marts_steps(target), {**(env or {}), **engine})


def describe(estimates: Sequence[StreamEstimate]) -> list[dict[str, object]]:
    return [
        {
            "stream": e.stream,
            "files": e.files,
            "bytes": e.bytes,
            "rows": e.rows,
            "counted": "exact" if e.exact else "estimated",
        }
        for e in estimates
    ]
