"""SQLite -> BigQuery (emulator): the loader's encoding and whole sync against a pandas loop.

The app's ``users`` table (the sample generator's, ``size`` rows) goes to BigQuery through the
emulator from PyPI. Measured, interleaved on the same rows:
- encoding: Arrow batches -> proto2 rows -> byte-sized requests (``RowMessage``,
  ``sized_requests``) against the original's way: ``DataFrame.iterrows()`` building each
  message from a dict, 500 rows per request;
- the whole sync (``loaders.jobs.load_sqlite``: read SQLite, stage through a PENDING Storage
  Write stream, MERGE) against the original's whole path: ``read_sql`` + the ``iterrows`` loop,
  each 500 rows one AppendRows request, committed (no MERGE: its rows only land);
- the fill of each request against AppendRows' 10 MB limit.
The pandas loop and the emulator are slow, so both whole syncs and the baseline encoding run on
at most CAP_ROWS rows: the figures are rates.
"""

from __future__ import annotations

import sqlite3
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from benchmarks.core import Context, Result, environment, human, timed
from loaders import jobs
from loaders.config import SqliteSourceConfig, load_config
from loaders.sources import sqlite as sqlite_source
from loaders.warehouse.bigquery import BigQuerySettings, BigQueryWarehouse
from loaders.warehouse.bigquery_write import MAX_REQUEST_BYTES, RowMessage, framed_size, sized_requests
from roundtrip.core.settings import load_settings
from roundtrip.dev.bigquery_emulator import bigquery_emulator
from roundtrip.dev.sample_data import SampleConfig, generate

NAME = "bigquery_sync"
CAP_ROWS = 100_000
APPEND_LIMIT = 10 * 1024 * 1024
ORIGINAL_BATCH = 500


def users_config(path: str) -> SqliteSourceConfig:
    app = load_config().sqlite["app"]
    return app.model_copy(update={"path": path})


def arrow_users(source: SqliteSourceConfig, limit: int) -> pa.Table:
    table = source.tables[0]
    batches = [b for b, _ in sqlite_source.read_batches(Path(source.path), table)]
    return pa.concat_tables(batches).slice(0, limit)


def encode_loader(users: pa.Table) -> list[int]:
    """The loader's way; returns each request's framed bytes."""
    message = RowMessage.for_schema(users.schema)
    return [
        sum(framed_size(r) for r in rows)
        for rows in sized_requests(message.serialize(users), "users", 0, MAX_REQUEST_BYTES)
    ]


def _original_value(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.value // 1000 if value.tz is not None else value.isoformat(sep=" ")
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def encode_iterrows(frame: pd.DataFrame, message: RowMessage, ints: set[str]) -> Iterator[list[bytes]]:
    """The original's way: a dict per row from ``iterrows``, 500 rows per request (integer
    columns with NULLs come out of pandas as floats: cast back)."""
    for start in range(0, len(frame), ORIGINAL_BATCH):
        rows = []
        for _, row in frame.iloc[start : start + ORIGINAL_BATCH].iterrows():
            fields = {name: _original_value(v) for name, v in row.items() if not pd.isna(v)}
            fields.update({name: int(fields[name]) for name in ints if name in fields})
            rows.append(message.cls(**fields).SerializeToString())
        yield rows


def integer_columns(schema: pa.Schema) -> set[str]:
    return {f.name for f in schema if pa.types.is_integer(f.type)}


def original_sync(settings: BigQuerySettings, path: str, users: pa.Table, dataset: str) -> int:
    """read_sql + iterrows + one AppendRows request per 500 rows into a pending stream, committed."""
    from google.cloud import bigquery
    from google.cloud.bigquery_storage_v1 import types

    client, write_client = settings.clients()
    with sqlite3.connect(path) as con:  # read as the original did (its timing counts)
        pd.read_sql_query(f"select * from users limit {users.num_rows}", con)
    # ...but encode the same typed values the loader sends (its timestamp rules): the same table
    frame = users.to_pandas()
    message = RowMessage.for_schema(users.schema)
    warehouse = BigQueryWarehouse(settings)
    client.create_dataset(f"{settings.project}.{dataset}", exists_ok=True)
    table = bigquery.Table(f"{settings.project}.{dataset}.users_original", schema=warehouse._schema(users.schema))
    client.delete_table(table, not_found_ok=True)
    client.create_table(table)
    path_ = write_client.table_path(settings.project, dataset, "users_original")
    stream = write_client.create_write_stream(
        parent=path_, write_stream=types.WriteStream(type_=types.WriteStream.Type.PENDING)
    )
    offset = 0

    def requests() -> Iterator[Any]:
        nonlocal offset
        for rows in encode_iterrows(frame, message, integer_columns(users.schema)):
            data = types.AppendRowsRequest.ProtoData(
                writer_schema=types.ProtoSchema(proto_descriptor=message.descriptor),
                rows=types.ProtoRows(serialized_rows=rows),
            )
            yield types.AppendRowsRequest(write_stream=stream.name, offset=offset, proto_rows=data)
            offset += len(rows)

    for response in write_client.append_rows(requests()):
        if response.error.code:
            raise RuntimeError(f"original sync: append refused: {response.error}")
    write_client.finalize_write_stream(name=stream.name)
    write_client.batch_commit_write_streams(
        types.BatchCommitWriteStreamsRequest(parent=path_, write_streams=[stream.name])
    )
    warehouse.close()
    return offset


def run(ctx: Context) -> list[Result]:
    n = ctx.size
    folder = ctx.path(NAME)
    app_db = folder / "app.db"
    generate(SampleConfig(users=n, items=100, orders=100, clicks=100), app_db, folder / "landing", None)
    source = users_config(str(app_db))
    rows = min(n, CAP_ROWS)
    users_all = arrow_users(source, n)
    users = users_all.slice(0, rows)
    message = RowMessage.for_schema(users.schema)
    frame = users.to_pandas()

    encode_seconds: list[float] = []
    original_seconds: list[float] = []
    for _ in range(ctx.repeat):
        took, sizes = timed(lambda: encode_loader(users_all))
        encode_seconds.append(took)
        original_seconds.append(
            timed(lambda: sum(len(r) for r in encode_iterrows(frame, message, integer_columns(users.schema))))[0]
        )
    fills = [s / APPEND_LIMIT for s in sizes[:-1]] or [sizes[-1] / APPEND_LIMIT]

    sync_seconds: list[float] = []
    original_sync_seconds: list[float] = []
    with bigquery_emulator() as emulator, environment(**emulator.env()):
        settings = BigQuerySettings.from_settings(load_settings())
        capped = source.model_copy(update={"path": str(folder / "app_capped.db")})
        with sqlite3.connect(app_db) as src, sqlite3.connect(capped.path) as dst:
            src.backup(dst)
            dst.execute(f"delete from users where rowid not in (select rowid from users order by user_id limit {rows})")
        warm = BigQueryWarehouse(settings)  # the emulator's first query loads its extensions: not in a timing
        warm.query("select 1")
        warm.close()
        for i in range(ctx.repeat):

            def loader_sync(i: int = i) -> None:
                warehouse = BigQueryWarehouse(settings)
                try:
                    target = capped.model_copy(update={"target_schema": f"bench_{i}"})
                    reports = jobs.load_sqlite("app", target, warehouse, full_refresh=True)
                    if reports[0].result.inserted != rows:
                        raise RuntimeError(f"bigquery sync: {reports[0].as_dict()}, expected {rows} inserted")
                finally:
                    warehouse.close()

            def original(i: int = i) -> None:
                original_sync(settings, str(capped.path), users, f"orig_{i}")

            # A B, then B A: whichever runs first does not always meet a colder emulator
            for fn, seconds in [(loader_sync, sync_seconds), (original, original_sync_seconds)][
                :: 1 if i % 2 == 0 else -1
            ]:
                seconds.append(timed(fn)[0])

    details = {"encode_seconds": encode_seconds, "original_encode_seconds": original_seconds,
               "sync_seconds": sync_seconds, "original_sync_seconds": original_sync_seconds,
               "requests": len(sizes), "request_bytes": sizes}  # fmt: skip
    return [
        Result(NAME, f"rows/s, encoding {human(n)} users", n / min(encode_seconds), "rows/s",
               rows / min(original_seconds), f"iterrows, 500 rows per request ({human(rows)} rows)", ">= 10",
               details=details),
        Result(NAME, f"rows/s, whole sync to the emulator ({human(rows)} users)", rows / min(sync_seconds), "rows/s",
               rows / min(original_sync_seconds), "read_sql + iterrows + AppendRows per 500 rows", ">= 1.0",
               note="the loader's MERGE (or its insert into a new table) and watermark included"),
        Result(NAME, f"request fill vs the 10 MB limit ({len(sizes)} requests)", statistics.median(fills) * 100, "%",
               note=f"min {min(fills) * 100:.1f} % over the full requests; the loader caps requests at 9 MiB"),
    ]  # fmt: skip
