"""Spark against DuckDB on the medallion (bronze -> silver -> gold) at ``size`` and 10 x ``size`` orders.

The same landing files and catalog for both: ``python -m spark_jobs run`` (local Spark, the
machine's cores) against the loaders + ``dbt build`` on DuckDB. The ratio is Spark's time over
DuckDB's: above 1, DuckDB is faster at that size on this machine. Where the crossover lies
(if anywhere) is read off the two sizes; docs/benchmarks.md discusses what a cluster changes.
"""

from __future__ import annotations

import os
import subprocess
import sys

from benchmarks.core import Context, Result, environment, human, timed
from benchmarks.medallion_data import Medallion, load_and_seed, prepare
from roundtrip.core.dbt import run_dbt

NAME = "spark_vs_duckdb"


def duckdb_side(data: Medallion) -> None:
    """Loaders (bronze) + dbt seed and build, from the landing files."""
    data.warehouse.unlink(missing_ok=True)
    load_and_seed(data.env, data.folder)
    with environment(**data.env):
        run_dbt(["build"], target="duckdb", target_path=data.folder / "target", quiet=True)


def spark_side(data: Medallion) -> None:
    command = [sys.executable, "-m", "spark_jobs", "run"]
    subprocess.run(command, env={**os.environ, **data.env}, check=True, stdout=subprocess.DEVNULL)


def run(ctx: Context) -> list[Result]:
    results = []
    for orders in (ctx.size, ctx.size * 10):
        data = prepare(ctx, orders, f"{NAME}-{orders}")
        duck, spark = [], []
        for _ in range(ctx.repeat):
            duck.append(timed(lambda: duckdb_side(data))[0])  # noqa: B023 (called at once)
            spark.append(timed(lambda: spark_side(data))[0])  # noqa: B023
        results.append(
            Result(NAME, f"seconds, medallion on Spark ({human(orders)} orders + clicks)", min(spark), "s", min(duck),
                   "loaders + dbt build on DuckDB", note="ratio > 1: DuckDB is faster here",
                   details={"spark_seconds": spark, "duckdb_seconds": duck})
        )  # fmt: skip
    return results
