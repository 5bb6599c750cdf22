"""BigQuery (emulator) -> DuckDB: ``python -m loaders bigquery`` against dlt's BigQuery source.

A table of ``size`` rows (INT64 key, STRING, NUMERIC, TIMESTAMP cursor, DATE, BOOL) is written
into the emulator's ``other-project`` (Storage Write, the loaders' own path, not timed); then,
interleaved, each loads it whole into a DuckDB file of its own, merging on the key:

- roundtrip: the Storage Read API, Arrow batches, staging + MERGE (``loaders.bigquery_job``);
- dlt: its ``sql_database`` source (``sql_table``, pyarrow backend, write disposition
  ``merge``) over the ``sqlalchemy-bigquery`` dialect (what dlt documents for reading BigQuery),
  given a client on the emulator; it reads through query jobs and REST pages.

Both warehouses must then hold the same rows (compared in DuckDB as multisets); no figure is
reported for loads that do not agree. Where dlt or its dialect is not installed (the ``bench``
extra), or cannot read the emulator, the result says why instead of a ratio.
"""

from __future__ import annotations

import functools
import shutil
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

from benchmarks.core import Context, Result, environment, human, timed

NAME = "bigquery_source"
PROJECT, DATASET, TABLE = "other-project", "bench", "events"
DLT_ENV = {"RUNTIME__DLTHUB_TELEMETRY": "false", "RUNTIME__LOG_LEVEL": "ERROR"}
COLUMNS = ["id", "name", "amount", "updated_at", "day", "flag"]


def _rows(n: int, start: int = 0) -> pa.Table:
    ids = list(range(start, start + n))
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "name": pa.array([None if i % 97 == 0 else f"event {i} é" for i in ids]),
            "amount": pa.array([Decimal(i % 100_000) / 1000 for i in ids], pa.decimal128(38, 9)),
            "updated_at": pa.array([base + timedelta(microseconds=i * 1_001) for i in ids], pa.timestamp("us", "UTC")),
            "day": pa.array([date(2026, 1, 1) + timedelta(days=i % 365) for i in ids], pa.date32()),
            "flag": pa.array([i % 3 == 0 for i in ids]),
        }
    )


def _fill(emulator: Any, n: int) -> None:
    from loaders.warehouse.bigquery import BigQuerySettings, BigQueryWarehouse

    settings = BigQuerySettings(PROJECT, "US", None, emulator.rest_url, emulator.grpc_endpoint)
    warehouse = BigQueryWarehouse(settings)
    try:
        step = 200_000
        warehouse.append(DATASET, TABLE, (_rows(min(step, n - s), s) for s in range(0, n, step)))
    finally:
        warehouse.close()


def roundtrip_load(emulator: Any, path: Path) -> int:
    from loaders.bigquery_job import load_bigquery
    from loaders.config import BigQuerySourceConfig
    from loaders.warehouse.duckdb import DuckDBWarehouse
    from roundtrip.core.bigquery import BigQueryConnection

    source = BigQuerySourceConfig.model_validate(
        {"target_schema": DATASET, "tables": [{"name": f"{PROJECT}.{DATASET}.{TABLE}", "primary_key": ["id"]}]}
    )
    connection = BigQueryConnection(emulator.project, "US", None, None, emulator.rest_url, emulator.grpc_endpoint)
    warehouse = DuckDBWarehouse(path)
    try:
        [report] = load_bigquery("bench", source, warehouse, connection=connection)
    finally:
        warehouse.close()
    return report.read


def dlt_load(emulator: Any, path: Path, pipelines: Path) -> None:
    import dlt
    import sqlalchemy as sa
    from dlt.sources.sql_database import sql_table

    # the DB-API would fetch a query's result through the Storage Read API, from its anonymous
    # result table, which the emulator cannot read: REST pages instead (tabledata.list)
    engine = sa.create_engine(
        f"bigquery://{emulator.project}?user_supplied_client=True",
        connect_args={"client": emulator.client(), "prefer_bqstorage_client": False},
    )
    resource = sql_table(
        credentials=engine,
        table=TABLE,
        schema=f"{PROJECT}.{DATASET}",
        backend="pyarrow",
        primary_key="id",
        write_disposition="merge",
    )
    pipeline = dlt.pipeline(
        pipeline_name="bq", destination=dlt.destinations.duckdb(str(path)), dataset_name=DATASET,
        pipelines_dir=str(pipelines),
    )  # fmt: skip
    pipeline.run(resource)


def compare(ours: Path, theirs: Path, n: int) -> None:
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute(f"attach '{ours}' as rt (read_only)")
        con.execute(f"attach '{theirs}' as dl (read_only)")
        shown = ", ".join(COLUMNS)
        a, b = f"select {shown} from rt.{DATASET}.{TABLE}", f"select {shown} from dl.{DATASET}.{TABLE}"
        counts = con.execute(f"select (select count(*) from ({a})), (select count(*) from ({b}))").fetchone()
        differ = con.execute(f"({a} except all {b}) union all ({b} except all {a}) limit 3").fetchall()
    finally:
        con.close()
    if counts != (n, n) or differ:
        raise RuntimeError(f"{NAME}: the warehouses differ: rows (roundtrip, dlt) {counts} of {n}; e.g. {differ}")


def run(ctx: Context) -> list[Result]:
    from roundtrip.dev.bigquery_emulator import bigquery_emulator

    n = ctx.size
    folder = ctx.path(NAME)
    with bigquery_emulator() as emulator, environment(**DLT_ENV):
        from google.cloud import bigquery

        client = emulator.client()
        dataset = bigquery.Dataset(f"{PROJECT}.{DATASET}")
        dataset.location = "US"
        client.create_dataset(dataset)
        _fill(emulator, n)
        why_not = None
        try:
            import dlt  # noqa: F401  (imported before the clock starts, as roundtrip's modules are)
            import sqlalchemy_bigquery  # noqa: F401
        except ImportError as exc:
            why_not = f"dlt's BigQuery source is not installed ({exc.name}): make bench installs the bench extra"
        ours_seconds, dlt_seconds = [], []
        for i in range(ctx.repeat):
            rep = folder / f"rep{i}"
            shutil.rmtree(rep, ignore_errors=True)
            rep.mkdir(parents=True)
            took, read = timed(functools.partial(roundtrip_load, emulator, rep / "roundtrip.duckdb"))
            if read != n:
                raise RuntimeError(f"{NAME}: roundtrip read {read} rows of {n}")
            ours_seconds.append(took)
            if why_not is None:
                try:
                    took, _ = timed(functools.partial(dlt_load, emulator, rep / "dlt.duckdb", rep / "pipelines"))
                except Exception as exc:  # the peer cannot read the emulator: say why, keep our figure
                    root = exc
                    while root.__cause__ or root.__context__:  # dlt wraps the driver's error
                        root = root.__cause__ or root.__context__  # type: ignore[assignment]
                    reason = " ".join(str(root).split())[:240]
                    why_not = f"dlt could not read the emulator: {type(root).__name__}: {reason}"
                else:
                    dlt_seconds.append(took)
                    compare(rep / "roundtrip.duckdb", rep / "dlt.duckdb", n)
    ours = n / min(ours_seconds)
    if why_not is not None:
        return [
            Result(NAME, f"rows/s, {human(n)} rows of another project -> DuckDB (no peer: {why_not})", ours, "rows/s")
        ]
    return [
        Result(NAME, f"rows/s, {human(n)} rows of another project -> DuckDB", ours, "rows/s",
               n / min(dlt_seconds), "dlt sql_table over sqlalchemy-bigquery, merge", ">= 1.2",
               note="identical rows in both warehouses"),
    ]  # fmt: skip
