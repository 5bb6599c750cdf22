"""The main job, end to end on the embedded default.

generate sample data -> load (SQLite, Postgres catalog, event files) -> dbt build on DuckDB ->
reverse syncs to Postgres and Redis -> summary. Postgres and Redis are throwaway servers started
here (or external ones from ROUNDTRIP_POSTGRES_URL / ROUNDTRIP_REDIS_URL), stopped at the end.

Two switches change the path, not the models:
- ``engine="spark"``: the medallion (bronze -> silver -> gold) runs on Spark (local, or the
  cluster of ROUNDTRIP_SPARK_MASTER); the loaders bring only the dimensions (users, catalog), and
  dbt builds everything downstream over Spark's tables (medallion_engine spark);
- ``target="bigquery"``: the warehouse is the BigQuery emulator, started here; what it cannot
  build is left out of the build and listed in the summary (``report.gaps``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from roundtrip.core.cli import ProgressBoard
from roundtrip.core.errors import RoundtripError
from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.core.settings import load_settings
from roundtrip.dev import demo_warehouse
from roundtrip.dev.sample_data import SampleConfig, generate
from roundtrip.dev.services import (
    POSTGRES_URL_ENV,
    REDIS_URL_ENV,
    PostgresEndpoint,
    RedisEndpoint,
    postgres_server,
    redis_server,
)

log = logging.getLogger(__name__)

# Layers reported in the summary: schema -> what it holds
LAYERS = demo_warehouse.LAYERS
ENGINES = ("dbt", "spark")
TARGETS = ("duckdb", "postgres", "bigquery")


@dataclass
class DemoReport:
    seconds: dict[str, float] = field(default_factory=dict)
    generated: dict[str, int] = field(default_factory=dict)
    spark: list[dict[str, Any]] = field(default_factory=list)  # the tables Spark wrote (engine spark)
    loaded: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    syncs: list[dict[str, Any]] = field(default_factory=list)
    destinations: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, str]] = field(default_factory=list)  # what the warehouse could not build, and why
    engine: str = "dbt"
    html: str = ""  # the one-page report written next to the warehouse


@contextlib.contextmanager
def _stage(report: DemoReport, name: str) -> Iterator[None]:
    started = time.perf_counter()
    log.info("== %s", name)
    yield
    report.seconds[name] = round(time.perf_counter() - started, 2)


def service_environment(pg: PostgresEndpoint, rd: RedisEndpoint) -> dict[str, str]:
    """What loaders, dbt and reverse_etl read to find the servers (the catalog and the Postgres
    warehouse default to the same server, and dbt's connection settings derive from it)."""
    return {POSTGRES_URL_ENV: pg.url(), REDIS_URL_ENV: rd.url()}


def run_demo(
    cfg: SampleConfig, fmt: str = "jsonl", fresh: bool = True, target: str = "duckdb", engine: str = "dbt"
) -> DemoReport:
    """The whole circle on ``target`` (duckdb: the embedded default; postgres: a warehouse
    database of its own on the demo's Postgres, next to the operational one the syncs write;
    bigquery: the BigQuery emulator), with the medallion on ``engine`` (dbt or spark)."""
    from loaders import jobs
    from loaders.config import load_config
    from loaders.warehouse import open_warehouse
    from reverse_etl.engine import Connections, RunOptions, run_syncs
    from reverse_etl.spec import load_specs
    from roundtrip.core.dbt import run_dbt

    if target not in TARGETS:
        raise RoundtripError(f"the demo runs on {', '.join(TARGETS)}, not {target!r}")
    if engine not in ENGINES:
        raise RoundtripError(f"the medallion engine is dbt or spark, not {engine!r}")
    if engine == "spark" and target == "bigquery":
        raise RoundtripError(
            "the demo cannot run Spark's medallion into the BigQuery emulator: BigQuery reads Spark's tables "
            "as external tables over gs://, which the emulator does not serve",
            hint="ENGINE=spark on TARGET=duckdb or postgres; docs/spark.md says how on real BigQuery",
        )
    report = DemoReport(engine=engine)
    started = time.perf_counter()
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if fresh and target == "duckdb":
        for stale in (settings.duckdb_path, settings.duckdb_path.with_suffix(".duckdb.wal")):
            stale.unlink(missing_ok=True)
    with contextlib.ExitStack() as services:
        # the demo's settings (its servers' URLs, its engine) hold for the demo only: a caller
        # that goes on (a test, a notebook) must not keep URLs of servers stopped at its end
        saved = dict(os.environ)

        def restore() -> None:
            os.environ.clear()
            os.environ.update(saved)

        services.callback(restore)
        # the loaders and Spark read the files in the format they are generated in
        os.environ["ROUNDTRIP_LANDING_FORMAT"] = fmt
        os.environ["ROUNDTRIP_MEDALLION_ENGINE"] = engine
        with _stage(report, "start services"):
            pg = services.enter_context(postgres_server(settings.services_dir))
            rd = services.enter_context(redis_server(settings.services_dir))
            if target == "bigquery":
                os.environ.update(services.enter_context(demo_warehouse.bigquery_warehouse()))
                report.gaps = demo_warehouse.bigquery_gaps()
        os.environ.update(service_environment(pg, rd))
        if target == "postgres":
            os.environ["ROUNDTRIP_WAREHOUSE_URL"] = warehouse_database(pg, settings, fresh)
        settings = load_settings()  # what the loaders, dbt and the syncs now read

        with _stage(report, "generate"), ProgressBoard("events written") as board:
            gen = generate(cfg, settings.app_db, settings.landing_dir, pg.url(), fmt, progress=board.advance)
            report.generated = {
                "users": gen.users,
                "items": gen.items,
                "orders": gen.orders,
                "clicks": gen.clicks,
                "files": gen.files,
            }

        if engine == "spark":
            spark_output = str(settings.data_dir / "spark")
            os.environ["ROUNDTRIP_SPARK_OUTPUT"] = spark_output
            if fresh:
                shutil.rmtree(spark_output, ignore_errors=True)
            with _stage(report, "spark"):
                report.spark = run_spark_medallion(spark_output, fmt)

        with _stage(report, "load"), ProgressBoard("rows read") as board:
            config = load_config(settings=settings)
            if engine == "spark":  # Spark read the event files: the dimensions only
                config = config.model_copy(update={"files": {}})
            warehouse = open_warehouse(target, settings=settings)
            try:
                results = jobs.load_all(config, warehouse, progress=board.advance)
            finally:
                warehouse.close()
            report.loaded = [r.as_dict() for r in results]

        if engine == "spark" and target == "postgres":
            with _stage(report, "publish"):
                report.spark += run_publish(spark_output, target)

        with _stage(report, "dbt build"):
            target_path = None if target == "duckdb" else settings.dbt_target_dir(target)
            run_dbt(["build", *demo_warehouse.dbt_build_args(target)], target=target, target_path=target_path)

        with _stage(report, "reverse syncs"):
            endpoints = Connections.of(postgres_url=pg.url(), redis_url=rd.url())
            specs = load_specs(target=target)
            with ProgressBoard("rows sent") as board:
                synced = run_syncs(specs, endpoints, RunOptions(on_rows=board.advance))
            failed = [f"{r.spec.name}: {r.error}" for r in synced if not r.ok]
            if failed:
                raise RoundtripError("reverse syncs failed: " + "; ".join(failed))
            report.syncs = [r.as_dict() for r in synced]

        with _stage(report, "summary"):
            from roundtrip.dev.report import report_path, write_report

            report.layers = demo_warehouse.warehouse_layers(target, settings)
            report.destinations = destination_state(specs, pg, rd)
            html = report_path(settings.data_dir, target)
            write_report(
                html, report, target, demo_warehouse.daily_gmv(target, settings), time.perf_counter() - started
            )
            report.html = str(html)
    return report


def _python_module(args: list[str], what: str) -> list[dict[str, Any]]:
    """``python -m <args> --json`` in its own process (its memory is its own), logs shown as
    they come; the JSON lines it prints are its result."""
    done = subprocess.run([sys.executable, "-m", *args, "--json"], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RoundtripError(f"{what} failed with exit code {done.returncode} (see its output above)")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def run_spark_medallion(output: str, fmt: str) -> list[dict[str, Any]]:
    """bronze -> silver -> gold on Spark (ROUNDTRIP_SPARK_MASTER: local by default, or a cluster),
    the catalog read over JDBC from the demo's Postgres."""
    rows = _python_module(["spark_jobs", "run", "--output", output, "--format", fmt], "the medallion on Spark")
    return [{k: v for k, v in row.items() if k in ("table", "rows", "seconds")} for row in rows]


def run_publish(output: str, target: str) -> list[dict[str, Any]]:
    """Spark's tables into the Postgres warehouse, where dbt reads them (``spark_jobs publish``)."""
    rows = _python_module(
        ["spark_jobs", "publish", "--output", output, "--target", target], "publishing Spark's tables"
    )
    return [{k: v for k, v in row.items() if k in ("table", "rows", "seconds")} for row in rows]


def warehouse_database(pg: PostgresEndpoint, settings: Any, fresh: bool) -> str:
    """The Postgres warehouse of a demo on ``--target postgres``: ROUNDTRIP_WAREHOUSE_URL when
    set apart from the operational database, else a database ``warehouse`` on the demo's server
    (the replace syncs write tables named like the marts: they must not be the marts)."""
    import psycopg

    given = settings.secret("warehouse_url")
    if given and given != pg.url():
        return str(given)
    name = "warehouse"
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        if fresh:
            conn.execute(f'drop database if exists "{name}" with (force)')
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(f'create database "{name}"')
    return pg.url(name)


def destination_state(specs: list[Any], pg: PostgresEndpoint, rd: RedisEndpoint) -> list[dict[str, Any]]:
    """What the destinations hold now, counted on the servers themselves."""
    import psycopg
    import redis

    from reverse_etl.spec import key_template_fields

    out = []
    client = redis.Redis.from_url(rd.url())
    with psycopg.connect(pg.url()) as conn:
        for spec in specs:
            if spec.settings.kind == "postgres":
                schema, _, table = spec.target.partition(".")
                row = conn.execute(f'select count(*) from "{schema}"."{table}"').fetchone()
                out.append({"sync": spec.name, "where": spec.destination, "rows or keys": int(row[0]) if row else 0})
            else:
                pattern = spec.target
                for field_name in key_template_fields(spec.target):
                    pattern = pattern.replace("{" + field_name + "}", "*")
                keys = sum(1 for _ in client.scan_iter(match=pattern, count=10_000))
                out.append({"sync": spec.name, "where": spec.destination, "rows or keys": keys})
    client.close()
    return out
