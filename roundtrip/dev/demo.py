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
LAYERS = ("raw_app", "raw_catalog", "bronze", "staging", "silver", "gold", "marts", "serving", "reference")


@dataclass
class DemoReport:
    seconds: dict[str, float] = field(default_factory=dict)
    generated: dict[str, int] = field(default_factory=dict)
    loaded: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    syncs: list[dict[str, Any]] = field(default_factory=list)
    destinations: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def _stage(report: DemoReport, name: str) -> Iterator[None]:
    started = time.perf_counter()
    log.info("[bold]== %s[/]", name, extra={"markup": True})
    yield
    report.seconds[name] = round(time.perf_counter() - started, 2)


def service_environment(pg: PostgresEndpoint, rd: RedisEndpoint) -> dict[str, str]:
    """What loaders, dbt and reverse_etl read to find the servers (the catalog and the Postgres
    warehouse default to the same server, and dbt's connection settings derive from it)."""
    return {POSTGRES_URL_ENV: pg.url(), REDIS_URL_ENV: rd.url()}


def run_demo(cfg: SampleConfig, fmt: str = "jsonl", fresh: bool = True) -> DemoReport:
    from loaders import jobs
    from loaders.config import load_config
    from loaders.warehouse import open_warehouse
    from reverse_etl.engine import Endpoints, run_syncs
    from reverse_etl.spec import load_specs
    from roundtrip.core.dbt import run_dbt

    report = DemoReport()
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if fresh:
        for stale in (settings.duckdb_path, settings.duckdb_path.with_suffix(".duckdb.wal")):
            stale.unlink(missing_ok=True)
    with contextlib.ExitStack() as services:
        with _stage(report, "start services"):
            pg = services.enter_context(postgres_server(settings.services_dir))
            rd = services.enter_context(redis_server(settings.services_dir))
        os.environ.update(service_environment(pg, rd))

        with _stage(report, "generate"):
            gen = generate(cfg, settings.app_db, settings.landing_dir, pg.url(), fmt)
            report.generated = {
                "users": gen.users,
                "items": gen.items,
                "orders": gen.orders,
                "clicks": gen.clicks,
                "files": gen.files,
            }

        with _stage(report, "load"):
            config = load_config()
            warehouse = open_warehouse("duckdb")
            try:
                results = jobs.load_all(config, warehouse)
            finally:
                warehouse.close()
            report.loaded = [r.as_dict() for r in results]

        with _stage(report, "dbt build"):
            run_dbt(["build"], target="duckdb")

        with _stage(report, "reverse syncs"):
            endpoints = Endpoints(postgres_url=pg.url(), redis_url=rd.url())
            specs = load_specs()
            synced = run_syncs(specs, endpoints)
            failed = [f"{r.spec.name}: {r.error}" for r in synced if not r.ok]
            if failed:
                raise RoundtripError("reverse syncs failed: " + "; ".join(failed))
            report.syncs = [r.as_dict() for r in synced]

        with _stage(report, "summary"):
            report.layers = warehouse_layers()
            report.destinations = destination_state(specs, pg, rd)
    return report


def warehouse_layers() -> list[dict[str, Any]]:
    """Rows per table of each layer, read back from the DuckDB file."""
    from roundtrip.core.duckdb_extensions import connect

    con = connect(load_settings().duckdb_path, read_only=True)
    try:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            f"where table_schema in ({', '.join(repr(s) for s in LAYERS)}) order by table_schema, table_name"
        ).fetchall()
        rows = []
        for schema, table in tables:
            count = con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()
            rows.append({"layer": schema, "table": table, "rows": int(count[0]) if count else 0})
        order = {name: i for i, name in enumerate(LAYERS)}
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
            if spec.settings.destination == "postgres":
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
