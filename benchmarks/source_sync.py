"""The same upsert sync read from each warehouse dbt builds on: DuckDB (the file, read in place),
Postgres (copied into the run's DuckDB by the postgres scanner) and the BigQuery emulator (the
Storage Read API). Baseline: the DuckDB source, in the same run, on the same rows and servers.

Per source and repetition: a first sync of ``size`` rows into a fresh table (the same work after
the read), then a re-sync with 1 % changed. Once per source, the read alone (the model into the
run's scratch database) shows what the remote copy costs, which is what decides where the diff
runs (docs/reverse_etl.md, "Where change detection runs").
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import psycopg

from benchmarks.core import Context, Result, environment, human, timed
from benchmarks.sync_data import MODEL, SOURCE, build_model, change_rows, forget_state, postgres_spec
from reverse_etl.engine import Connections, RunOptions, run_sync
from reverse_etl.scratch import Scratch
from reverse_etl.sources import open_source
from reverse_etl.spec import ModelRef, SyncSpec
from roundtrip.core.duckdb_extensions import connect
from roundtrip.core.settings import load_settings

NAME = "source_sync"
TARGET_TABLE = "crm.bench_from_source"
BIGQUERY_ROWS = 200_000  # the emulator (DuckDB behind a Python gRPC server) is reported, not judged


def _to_postgres(warehouse: Path, url: str) -> None:
    con = connect(warehouse, extensions=("postgres",))
    try:
        con.execute(f"attach '{url}' as pg (type postgres)")
        con.execute("create schema if not exists pg.marts")
        con.execute("drop table if exists pg.marts.bench_segments")
        con.execute(f"create table pg.marts.bench_segments as select * from {MODEL}")
    finally:
        con.close()


def _to_bigquery(warehouse: Path, emulator: object, rows: int) -> None:
    from loaders.warehouse.bigquery import BigQuerySettings, BigQueryWarehouse

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        # (a UTC timestamp: the loader writes BigQuery TIMESTAMPs from timestamptz)
        query = (
            f"select * replace (last_order_at::timestamptz as last_order_at) from {MODEL} order by user_id limit {rows}"
        )
        reader = con.execute(query).to_arrow_reader(100_000)
        bq = BigQueryWarehouse(
            BigQuerySettings(
                project=emulator.project,  # type: ignore[attr-defined]
                location="US",
                api_endpoint=emulator.rest_url,  # type: ignore[attr-defined]
                storage_endpoint=emulator.grpc_endpoint,  # type: ignore[attr-defined]
            )
        )
        try:
            bq.replace("marts", "bench_segments", (b for b in (reader.read_all(),)))
        finally:
            bq.close()
    finally:
        con.close()


def _spec(source: str, project: str | None = None) -> SyncSpec:
    spec = postgres_spec(f"bench_from_{source}", TARGET_TABLE)
    ref = (
        SOURCE
        if source != "bigquery"
        else ModelRef(database=project or "", schema="marts", identifier="bench_segments", relation="")
    )
    return spec.model_copy(update={"warehouse": source, "source": ref})


def _first_sync(url: str, spec: SyncSpec, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"drop table if exists {TARGET_TABLE}")
    forget_state(url, spec.name)
    result = run_sync(spec, Connections.of(postgres_url=url), RunOptions())
    if not result.ok or result.counts.inserted != rows:
        raise RuntimeError(f"{spec.name}: {result.status} {result.error or ''} {result.counts}")


def _read_only(spec: SyncSpec) -> float:
    """Seconds to make the model readable in the run's DuckDB (the copy, for remote sources)."""
    settings = load_settings()
    with Scratch(settings.reverse_etl_duckdb_memory) as scratch:
        started = time.perf_counter()
        assert spec.source is not None
        relation = open_source(spec.warehouse, settings).relation(scratch.con, scratch.db, spec.source, None)
        scratch.con.execute(f"select count(*) from {relation}").fetchone()
        return time.perf_counter() - started


def run(ctx: Context) -> list[Result]:
    n = ctx.size
    pg = ctx.postgres()
    url = pg.url()
    warehouse = ctx.path(NAME) / "warehouse.duckdb"
    build_model(warehouse, n)
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        conn.execute("drop database if exists bench_warehouse with (force)")
        conn.execute("create database bench_warehouse")
    pg_warehouse = pg.url("bench_warehouse")
    _to_postgres(warehouse, pg_warehouse)
    results: list[Result] = []
    seconds: dict[str, dict[str, list[float]]] = {}
    with environment(ROUNDTRIP_DUCKDB_PATH=str(warehouse), ROUNDTRIP_WAREHOUSE_URL=pg_warehouse):
        for source in ("duckdb", "postgres"):
            seconds[source] = {"first": [], "read": [], "resync": []}
        for _ in range(ctx.repeat):  # interleaved: load on the machine weighs on both alike
            for source in ("duckdb", "postgres"):
                spec, runs = _spec(source), seconds[source]
                runs["first"].append(timed(lambda: _first_sync(url, spec, n))[0])  # noqa: B023
                runs["read"].append(_read_only(spec))
                changed = change_rows(warehouse, 100)  # 1 % of the rows move on
                if source == "postgres":
                    _to_postgres(warehouse, pg_warehouse)
                elapsed, result = timed(lambda: run_sync(spec, Connections.of(postgres_url=url), RunOptions()))  # noqa: B023
                if not result.ok or result.counts.updated != changed:
                    raise RuntimeError(f"{spec.name} re-sync: {result.status} {result.error or ''} {result.counts}")
                runs["resync"].append(elapsed)
    best = {s: {k: min(v) for k, v in runs.items()} for s, runs in seconds.items()}
    duck, post = best["duckdb"], best["postgres"]
    results.append(
        Result(NAME, f"rows/s, first sync of {human(n)} rows from Postgres", n / post["first"], "rows/s",
               n / duck["first"], "the same sync from DuckDB", ">= 0.5",
               details={"seconds": seconds, "read_seconds": {s: b["read"] for s, b in best.items()}})
    )  # fmt: skip
    results.append(
        Result(NAME, f"seconds, re-sync of 1 % of {human(n)} rows from Postgres", post["resync"], "s",
               duck["resync"], "the same re-sync from DuckDB",
               note=f"reading the model: Postgres {post['read']:.2f} s, DuckDB {duck['read']:.2f} s")
    )  # fmt: skip

    rows = min(n, BIGQUERY_ROWS)
    from roundtrip.dev.bigquery_emulator import bigquery_emulator

    with bigquery_emulator() as emulator:
        _to_bigquery(warehouse, emulator, rows)
        env = {**emulator.env(), "ROUNDTRIP_BQ_LOCATION": "US"}
        with environment(ROUNDTRIP_DUCKDB_PATH=str(warehouse), **env):
            spec = _spec("bigquery", emulator.project)
            bq_first = min(timed(lambda: _first_sync(url, spec, rows))[0] for _ in range(ctx.repeat))
            bq_read = _read_only(spec)
            small = build_and_time_duckdb(warehouse, url, rows, ctx.repeat)
    results.append(
        Result(NAME, f"rows/s, first sync of {human(rows)} rows from the BigQuery emulator", rows / bq_first, "rows/s",
               rows / small, f"the same sync of {human(rows)} rows from DuckDB",
               note=f"reported, not judged: the emulator is DuckDB behind a Python gRPC server (read {bq_read:.2f} s)")
    )  # fmt: skip
    return results


def build_and_time_duckdb(warehouse: Path, url: str, rows: int, repeat: int) -> float:
    """The DuckDB source's first sync over the first ``rows`` rows only (the BigQuery baseline)."""
    small = warehouse.with_name("small.duckdb")
    con = duckdb.connect(str(small))
    try:
        con.execute(f"attach '{warehouse}' as big (read_only)")
        con.execute("create schema if not exists marts")
        con.execute(f"create or replace table {MODEL} as select * from big.{MODEL} order by user_id limit {rows}")
    finally:
        con.close()
    with environment(ROUNDTRIP_DUCKDB_PATH=str(small)):
        spec = _spec("duckdb")
        return min(timed(lambda: _first_sync(url, spec, rows))[0] for _ in range(repeat))
