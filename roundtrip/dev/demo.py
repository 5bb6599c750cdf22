"""The main job, end to end on the embedded default.

generate sample data -> load (SQLite, Postgres catalog, event files) -> dbt build on DuckDB ->
reverse syncs to Postgres and Redis -> summary. Postgres and Redis are throwaway servers started
here (or external ones from ROUNDTRIP_POSTGRES_URL / ROUNDTRIP_REDIS_URL), stopped at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from roundtrip.core.cli import ProgressBoard
from roundtrip.core.errors import RoundtripError
from roundtrip.core.settings import load_settings
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
LAYERS = (
    "raw_app", "raw_catalog", "bronze", "staging", "silver", "intermediate", "gold", "marts", "serving", "snapshots",
    "reference",
)  # fmt: skip


@dataclass
class DemoReport:
    seconds: dict[str, float] = field(default_factory=dict)
    generated: dict[str, int] = field(default_factory=dict)
    loaded: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    syncs: list[dict[str, Any]] = field(default_factory=list)
    destinations: list[dict[str, Any]] = field(default_factory=list)
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


def run_demo(cfg: SampleConfig, fmt: str = "jsonl", fresh: bool = True, target: str = "duckdb") -> DemoReport:
    """The whole circle on ``target`` (duckdb: the embedded default; postgres: a warehouse
    database of its own on the demo's Postgres, next to the operational one the syncs write)."""
    from loaders import jobs
    from loaders.config import load_config
    from loaders.warehouse import open_warehouse
    from reverse_etl.engine import Connections, RunOptions, run_syncs
    from reverse_etl.spec import load_specs
    from roundtrip.core.dbt import run_dbt

    if target not in ("duckdb", "postgres"):
        raise RoundtripError(f"the demo runs on duckdb or postgres, not {target!r}", hint="see README, BigQuery")
    report = DemoReport()
    started = time.perf_counter()
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if fresh and target == "duckdb":
        for stale in (settings.duckdb_path, settings.duckdb_path.with_suffix(".duckdb.wal")):
            stale.unlink(missing_ok=True)
    with contextlib.ExitStack() as services:
        with _stage(report, "start services"):
            pg = services.enter_context(postgres_server(settings.services_dir))
            rd = services.enter_context(redis_server(settings.services_dir))
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

        with _stage(report, "load"), ProgressBoard("rows read") as board:
            config = load_config(settings=settings)
            warehouse = open_warehouse(target, settings=settings)
            try:
                results = jobs.load_all(config, warehouse, progress=board.advance)
            finally:
                warehouse.close()
            report.loaded = [r.as_dict() for r in results]

        with _stage(report, "dbt build"):
            target_path = None if target == "duckdb" else settings.dbt_target_dir(target)
            run_dbt(["build"], target=target, target_path=target_path)

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

            report.layers = warehouse_layers(target, settings)
            report.destinations = destination_state(specs, pg, rd)
            html = report_path(settings.data_dir, target)
            write_report(html, report, target, daily_gmv(target, settings), time.perf_counter() - started)
            report.html = str(html)
    return report


def daily_gmv(target: str, settings: Any) -> list[tuple[Any, Any]]:
    """(event_date, gmv) of gold.daily_gmv_metrics, for the report's chart."""
    query = "select event_date, gmv from gold.daily_gmv_metrics order by event_date"
    if target == "postgres":
        import psycopg

        with psycopg.connect(settings.secret("warehouse_url")) as conn:
            return [(r[0], r[1]) for r in conn.execute(query).fetchall()]
    from roundtrip.core.duckdb_extensions import connect

    con = connect(settings.duckdb_path, read_only=True)
    try:
        return [(r[0], r[1]) for r in con.execute(query).fetchall()]
    finally:
        con.close()


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


def warehouse_layers(target: str = "duckdb", settings: Any = None) -> list[dict[str, Any]]:
    """Rows per table of each layer, read back from the warehouse."""
    settings = settings or load_settings()
    order = {name: i for i, name in enumerate(LAYERS)}
    rows = []
    if target == "postgres":
        import psycopg

        with psycopg.connect(settings.secret("warehouse_url")) as conn:
            tables = conn.execute(
                """select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
                   where c.relkind in ('r', 'v', 'm', 'p') and n.nspname = any(%s) order by 1, 2""",
                (list(LAYERS),),
            ).fetchall()
            for schema, table in tables:
                count = conn.execute(f'select count(*) from "{schema}"."{table}"').fetchone()
                rows.append({"layer": schema, "table": table, "rows": int(count[0]) if count else 0})
        return sorted(rows, key=lambda r: (order[r["layer"]], r["table"]))
    from roundtrip.core.duckdb_extensions import connect

    con = connect(settings.duckdb_path, read_only=True)
    try:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            f"where table_schema in ({', '.join(repr(s) for s in LAYERS)}) order by table_schema, table_name"
        ).fetchall()
        for schema, table in tables:
            count = con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()
            rows.append({"layer": schema, "table": table, "rows": int(count[0]) if count else 0})
        return sorted(rows, key=lambda r: (order[r["layer"]], r["table"]))
    finally:
        con.close()


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
