"""A BigQuery warehouse: the model's selected columns through the Storage Read API as Arrow
record batches (what the real client does), appended to the run's scratch DuckDB a batch at a
time. One read session, read stream by stream; a read is billed by the bytes of the selected
columns (docs/reverse_etl.md, "Reading from BigQuery")."""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from reverse_etl.sources.base import Since
from reverse_etl.spec import ModelRef
from roundtrip.core.bigquery import BigQueryConnection
from roundtrip.core.bigquery_read import TableId, open_read
from roundtrip.core.sql import quote

log = logging.getLogger(__name__)


class BigQuerySource:
    name = "bigquery"

    def __init__(self, connection: BigQueryConnection) -> None:
        self.connection = connection

    def relation(
        self, con: Any, scratch: str, model: ModelRef, columns: list[str] | None, since: Since | None = None
    ) -> str:
        table = TableId(model.database, model.schema_, model.identifier)
        # one ordered stream: the scratch copy is written by one thread anyway
        read = open_read(self.connection, table, columns, row_filter=since.bigquery() if since else None)
        copy = f"{quote(scratch)}.model"
        con.register("rt_bq_batch", read.schema.empty_table())
        con.execute(f"create or replace table {copy} as select * from rt_bq_batch")
        rows = 0
        for batch in read.batches():
            con.register("rt_bq_batch", pa.Table.from_batches([batch]))
            con.execute(f"insert into {copy} select * from rt_bq_batch")
            rows += batch.num_rows
        con.unregister("rt_bq_batch")
        log.debug("read %d rows of %s through the Storage Read API", rows, table)
        return copy

    def describe(self, model: ModelRef) -> str:
        where = f" ({self.connection.api_endpoint})" if self.connection.emulated else ""
        return f"bigquery{where} {model.database}.{model.schema_}.{model.identifier}"
