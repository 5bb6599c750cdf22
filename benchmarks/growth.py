"""The main job as it grows: generate -> load -> dbt build -> syncs at ``size`` times each of
``--multiples`` (1, 5 and 10 by default) orders, per engine of the medallion, per stage: seconds and peak RSS.

Engines (the same landing files, catalog and users for each):
- ``duckdb``: the three loaders (events into bronze), then ``dbt build`` of the whole project;
- ``spark local``: ``python -m spark_jobs run`` (local mode, every core), the two loaders of the
  dimensions, then ``dbt build`` over Spark's tables (medallion_engine spark);
- ``spark cluster``: the same on a standalone cluster started here from pyspark's ``spark-class``
  (a master and one worker with every core, loopback; the executor's memory counted in the peak).

Each stage runs in its own process; its peak RSS is that of its whole process tree (sampled from
/proc every 0.2 s: a Spark driver and its JVM, dbt and DuckDB), and for the cluster the executors
too. The syncs run into a fresh Postgres database and a flushed Redis per run, so each is a first
sync. The baseline of every Spark row is the DuckDB engine at the same size; the crossover is where
Spark on one machine stops losing: measured when it does within the sizes run, else extrapolated
from each engine's growth (least squares on seconds per order), or "none" when Spark's seconds
grow at least as fast as DuckDB's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.core import Context, Result, human

NAME = "growth"
ENGINES = ("duckdb", "spark local", "spark cluster")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


# ---------------------------------------------------------------- memory of a process tree


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(parent, []).append(int(entry.name))
    return tree


def tree_rss_mb(roots: list[int]) -> float:
    """Resident memory of ``roots`` and all their descendants, in MB."""
    tree, seen, todo, kib = _children(), set(), list(roots), 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            kib += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
        except (OSError, IndexError, ValueError):
            continue
        todo += tree.get(pid, [])
    return kib / 1024


@dataclass
class Stage:
    name: str
    seconds: float
    peak_mb: float


def run_stage(
    name: str, commands: list[list[str]], env: dict[str, str], log: Path, also: list[int] | None = None
) -> Stage:
    """``commands`` one after the other (output to ``log``); seconds, and the peak RSS of each
    one's process tree (plus ``also``'s trees, e.g. a cluster's worker), the highest of them."""
    started, peak = time.perf_counter(), 0.0
    for command in commands:
        with log.open("ab") as out:
            proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                peak = max(peak, tree_rss_mb([proc.pid, *(also or [])]))
                time.sleep(0.2)
        if proc.returncode not in (0, 2):  # 2: a loader held some input back and said so
            tail = log.read_bytes()[-3000:].decode(errors="replace")
            raise RuntimeError(f"growth: {name}: {' '.join(command[:5])} ... failed ({proc.returncode}):\n{tail}")
    return Stage(name, round(time.perf_counter() - started, 1), round(peak))


# ---------------------------------------------------------------- the job


@dataclass
class Job:
    engine: str
    orders: int
    stages: list[Stage] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    @property
    def peak_mb(self) -> float:
        return max(s.peak_mb for s in self.stages)

    def medallion_seconds(self) -> float:
        """Up to the marts: everything but generating and syncing."""
        return sum(s.seconds for s in self.stages if s.name not in ("generate", "syncs"))


def _py(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def _fresh_destinations(ctx: Context, name: str) -> dict[str, str]:
    """An empty Postgres database for the syncs (and their state), a flushed Redis."""
    import psycopg
    import redis

    pg, rd = ctx.postgres(), ctx.redis()
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    client = redis.Redis.from_url(rd.url())
    client.flushdb()
    client.close()
    return {"ROUNDTRIP_POSTGRES_URL": pg.url(name), "ROUNDTRIP_REDIS_URL": rd.url()}


def run_job(ctx: Context, engine: str, orders: int, base: dict[str, str], cluster: Any = None) -> Job:
    from spark_jobs.auto import DIMENSION_LOADERS

    folder = ctx.path(f"{NAME}-{orders}-{engine.replace(' ', '-')}")
    env = {
        **base,
        "ROUNDTRIP_DUCKDB_PATH": str(folder / "warehouse.duckdb"),
        "ROUNDTRIP_SPARK_OUTPUT": str(folder / "spark"),
        "ROUNDTRIP_SPARK_TMP": str(folder / "spark-tmp"),
        "DBT_TARGET_PATH": str(folder / "target"),
        "DBT_LOG_PATH": str(folder / "logs"),
        "ROUNDTRIP_MEDALLION_ENGINE": "dbt" if engine == "duckdb" else "spark",
    }
    job = Job(engine, orders)
    log = folder / "output.log"
    dbt = [sys.executable, "-m", "roundtrip", "dbt", "build", "--target", "duckdb"]
    if engine == "duckdb":
        loads = [_py("loaders", kind, "--target", "duckdb") for kind in (*DIMENSION_LOADERS, "files")]
        job.stages.append(run_stage("load", loads, env, log))
    else:
        spark_env = {**env, **(cluster.env() if cluster else {})}
        spark = [_py("spark_jobs", "run", "--json")]
        job.stages.append(run_stage("spark", spark, spark_env, log, list(cluster.pids) if cluster else None))
        loads = [_py("loaders", kind, "--target", "duckdb") for kind in DIMENSION_LOADERS]
        job.stages.append(run_stage("load", loads, env, log))
    job.stages.append(run_stage("dbt build", [dbt], env, log))
    sync_env = {**env, **_fresh_destinations(ctx, f"growth_{orders}_{engine.replace(' ', '_')}")}
    syncs = [_py("reverse_etl", "run", "--sync", "all", "--target", "duckdb")]
    job.stages.append(run_stage("syncs", syncs, sync_env, log))
    _remove_outputs(folder)  # at 10 M orders a job leaves GBs: the disk holds one job at a time
    return job


def _remove_outputs(folder: Path) -> None:
    """What a job or a size left in its folder but its logs."""
    import shutil

    for path in folder.iterdir():
        if path.suffix != ".log":
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def crossover(jobs: list[Job]) -> tuple[str, float | None]:
    """Orders from which Spark local's medallion is no slower than DuckDB's: measured, else
    extrapolated from a least-squares line through each engine's (orders, seconds)."""

    def line(engine: str) -> tuple[float, float]:
        points = [(j.orders, j.medallion_seconds()) for j in jobs if j.engine == engine]
        n = len(points)
        mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
        slope = sum((x - mx) * (y - my) for x, y in points) / (sum((x - mx) ** 2 for x, _ in points) or 1)
        return my - slope * mx, slope

    by_size = sorted({j.orders for j in jobs})
    for orders in by_size:
        times = {j.engine: j.medallion_seconds() for j in jobs if j.orders == orders}
        if times.get("spark local", float("inf")) <= times["duckdb"]:
            return f"measured at {human(orders)} orders", float(orders)
    (a_d, b_d), (a_s, b_s) = line("duckdb"), line("spark local")
    if b_s >= b_d:
        return "none: Spark's seconds per order are not lower than DuckDB's on this machine", None
    return "extrapolated from the growth of each engine", (a_s - a_d) / (b_d - b_s)


def run(ctx: Context) -> list[Result]:
    import psycopg

    from roundtrip.dev.spark_cluster import spark_cluster

    pg = ctx.postgres()
    jobs: list[Job] = []
    cores = os.cpu_count() or 1
    with spark_cluster(cores=cores, memory="4g") as cluster:
        for orders in (ctx.size * m for m in ctx.multiples):
            folder = ctx.path(f"{NAME}-{orders}")
            database = f"growth_catalog_{orders}"
            with psycopg.connect(pg.url(), autocommit=True) as conn:
                conn.execute(f'drop database if exists "{database}" with (force)')
                conn.execute(f'create database "{database}"')
            base = {
                "ROUNDTRIP_DATA_DIR": str(folder),
                "ROUNDTRIP_APP_DB": str(folder / "app.db"),
                "ROUNDTRIP_LANDING_PATH": str(folder / "landing"),
                "ROUNDTRIP_CATALOG_URL": pg.url(database),
                "ROUNDTRIP_TARGET": "duckdb",
            }
            users = max(1_000, orders // 10)
            generate = _py("roundtrip", "generate", "--orders", str(orders), "--clicks", str(orders),
                           "--users", str(users), "-q")  # fmt: skip
            generated = run_stage(
                "generate", [generate], {**base, "ROUNDTRIP_POSTGRES_URL": pg.url(database)}, folder / "generate.log"
            )
            for engine in ENGINES:
                job = run_job(ctx, engine, orders, base, cluster if engine == "spark cluster" else None)
                job.stages.insert(0, generated)
                jobs.append(job)
                print(f"   {engine} at {human(orders)} orders: "
                      + ", ".join(f"{s.name} {s.seconds} s / {s.peak_mb} MB" for s in job.stages), flush=True)  # fmt: skip
            _remove_outputs(folder)  # this size's landing files and app database
    return results_of(jobs)


def results_of(jobs: list[Job]) -> list[Result]:
    results = []
    duckdb = {j.orders: j for j in jobs if j.engine == "duckdb"}
    for job in jobs:
        base = duckdb[job.orders]
        details = {s.name: {"seconds": s.seconds, "peak_rss_mb": s.peak_mb} for s in job.stages}
        label = f"{job.engine}, {human(job.orders)} orders"
        spark = job.engine != "duckdb"
        results.append(
            Result(NAME, f"seconds, medallion to marts, {label}", job.medallion_seconds(), "s",
                   base.medallion_seconds() if spark else None, "DuckDB engine" if spark else None,
                   note="ratio > 1: DuckDB is faster" if spark else "", details=details)
        )  # fmt: skip
        results.append(
            Result(NAME, f"peak RSS MB of a stage, {label}", job.peak_mb, "MB",
                   base.peak_mb if spark else None, "DuckDB engine" if spark else None, details=details)
        )  # fmt: skip
    how, orders = crossover(jobs)
    results.append(
        Result(NAME, f"crossover, Spark local vs DuckDB ({how})", orders or 0.0, "orders",
               details={"how": how, "orders": orders})
    )  # fmt: skip
    return results


# ---------------------------------------------------------------- the table of docs/benchmarks.md

STAGES = ("generate", "spark", "load", "dbt build", "syncs")


def markdown(report: dict[str, Any]) -> str:
    """The growth results of a ``python -m benchmarks`` JSON report as a Markdown table: one row
    per size and engine, seconds / peak RSS per stage, the medallion's total and its ratio."""
    rows = [r for r in report["benchmarks"][NAME]["results"] if r["metric"].startswith("seconds, medallion")]
    header = ["orders", "engine", *(f"{s} s / MB" for s in STAGES), "to the marts", "vs DuckDB"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        engine, size = r["metric"].removeprefix("seconds, medallion to marts, ").rsplit(", ", 1)
        cells = [
            f"{r['details'][s]['seconds']:.0f} / {r['details'][s]['peak_rss_mb']:,.0f}" if s in r["details"] else "–"
            for s in STAGES
        ]
        ratio = f"{r['ratio']:.2f}×" if r.get("ratio") else ""
        lines.append(
            f"| {size.removesuffix(' orders')} | {engine} | " + " | ".join(cells) + f" | {r['value']:.0f} s | {ratio} |"
        )
    crossover = [r for r in report["benchmarks"][NAME]["results"] if r["metric"].startswith("crossover")]
    if crossover:
        lines.append("")
        lines.append(f"Crossover: {crossover[0]['details']['how']}"
                     + (f", at {human(crossover[0]['value'])} orders" if crossover[0]["details"]["orders"] else "") + ".")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    import json

    print(markdown(json.loads(Path(sys.argv[1]).read_text())))
