"""A BigQuery warehouse: the model's selected columns through the Storage Read API as Arrow
record batches (what the real client does), appended to the run's scratch DuckDB a batch at a
time. One read session, read stream by stream; a read is billed by the bytes of the selected
columns (docs/reverse_etl.md, "Reading from BigQuery")."""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from reverse_etl.spec import ModelRef
from roundtrip.core.bigquery import BigQueryConnection
from roundtrip.core.sql import quote

log = logging.getLogger(__name__)


class BigQuerySource:
    name = "bigquery"

    def __init__(self, connection: BigQueryConnection) -> None:
        self.connection = connection

    def relation(self, con: Any, scratch: str, model: ModelRef, columns: list[str] | None) -> str:
        from google.cloud.bigquery_storage_v1 import types

        client = self.connection.read_client()
        table = f"projects/{model.database}/datasets/{model.schema_}/tables/{model.identifier}"
        options = types.ReadSession.TableReadOptions(selected_fields=columns or [])
        session = client.create_read_session(
            parent=f"projects/{self.connection.project}",
            read_session=types.ReadSession(table=table, data_format=types.DataFormat.ARROW, read_options=options),
            max_stream_count=1,  # one ordered stream: the scratch copy is written by one thread anyway
        )
        schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
        copy = f"{quote(scratch)}.model"
        empty = pa.Table.from_batches([], schema=_plain(schema))
        con.register("rt_bq_batch", empty)
        con.execute(f"create or replace table {copy} as select * from rt_bq_batch")
        rows = 0
        for stream in session.streams:
            for response in client.read_rows(stream.name):
                # each response carries one Arrow record batch, serialized against the session's schema
                batch = pa.ipc.read_record_batch(
                    pa.py_buffer(response.arrow_record_batch.serialized_record_batch), schema
                )
                if not batch.num_rows:
                    continue
                con.register("rt_bq_batch", pa.Table.from_batches([batch.cast(_plain(batch.schema))]))
                con.execute(f"insert into {copy} select * from rt_bq_batch")
                rows += batch.num_rows
        con.unregister("rt_bq_batch")
        log.debug("read %d rows of %s through the Storage Read API", rows, table)
        return copy

    def describe(self, model: ModelRef) -> str:
        where = f" ({self.connection.api_endpoint})" if self.connection.emulated else ""
        return f"bigquery{where} {model.database}.{model.schema_}.{model.identifier}"


def _plain(schema: pa.Schema) -> pa.Schema:
    """The schema without field metadata (the emulator tags each field with its DuckDB type)."""
    return pa.schema([pa.field(f.name, f.type, f.nullable) for f in schema])
