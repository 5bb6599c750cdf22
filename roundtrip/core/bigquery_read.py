"""One BigQuery table through the Storage Read API as Arrow record batches: the one reader of the
project, used by reverse_etl's BigQuery source (a model into the run's scratch DuckDB) and by
the loaders' BigQuery source (any table of any project into the warehouse).

A read session is created in the billing project (``ROUNDTRIP_BQ_PROJECT``) for a table of any
project, with the selected columns and an optional row restriction applied by BigQuery itself.
Each ReadRows response carries one Arrow record batch, serialized against the session's schema;
``StorageRead.batches()`` yields them one at a time, so memory is bounded by a batch, not by the
table. Field metadata is dropped (the emulator tags each field with its DuckDB type).

The server's refusals that no retry can fix (a missing table or column, a denied permission, a
filter it cannot parse) become ``BigQueryReadError`` naming the table, with ``kind`` saying
which; anything else (a lost connection) is raised as the client raised it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from roundtrip.core.errors import RoundtripError

if TYPE_CHECKING:
    from roundtrip.core.bigquery import BigQueryConnection

log = logging.getLogger(__name__)

ReadErrorKind = Literal["not_found", "denied", "invalid"]
# project ids may hold dashes, dots (domain-scoped "example.com:project") and colons; datasets
# and tables are letters, digits and underscores (tables also some unicode: kept as given)
_TABLE_ID = re.compile(r"^(?P<project>[^.`\s]+(?:\.[^.`\s:]+:[^.`\s]+)?)\.(?P<dataset>[^.`\s]+)\.(?P<table>[^.`]+)$")


class BigQueryReadError(RoundtripError):
    """BigQuery refused the read for good: ``kind`` is not_found, denied or invalid."""

    def __init__(self, message: str, kind: ReadErrorKind, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.kind = kind


@dataclass(frozen=True)
class TableId:
    """A table of any project: ``project.dataset.table``."""

    project: str
    dataset: str
    table: str

    @classmethod
    def parse(cls, text: str) -> TableId:
        found = _TABLE_ID.match(text.strip().strip("`"))
        if found is None:
            raise ValueError(f"{text!r} is not project.dataset.table")
        return cls(found["project"], found["dataset"], found["table"])

    @property
    def path(self) -> str:
        """The Storage Read API's resource name."""
        return f"projects/{self.project}/datasets/{self.dataset}/tables/{self.table}"

    def __str__(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"


def plain_schema(schema: pa.Schema) -> pa.Schema:
    """The schema without field metadata (the emulator tags each field with its DuckDB type)."""
    return pa.schema([pa.field(f.name, f.type, f.nullable) for f in schema])


def read_error(exc: BaseException, table: TableId | str, billing: str) -> BigQueryReadError | None:
    """The terminal refusals of the BigQuery APIs (REST or gRPC) as a ``BigQueryReadError``
    naming ``table``; None for anything else (to be raised as it is)."""
    from google.api_core import exceptions as gexc

    reason = " ".join(str(getattr(exc, "message", None) or exc).split())[:400]
    if isinstance(exc, gexc.NotFound):
        return BigQueryReadError(f"{table}: not found ({reason})", "not_found")
    if isinstance(exc, gexc.Forbidden | gexc.PermissionDenied | gexc.Unauthorized):
        return BigQueryReadError(
            f"{table}: permission denied ({reason})",
            "denied",
            hint=f"the credentials need bigquery.tables.getData on {table} and "
            f"bigquery.readsessions.create (roles/bigquery.readSessionUser) on the billing project {billing} "
            "(ROUNDTRIP_BQ_PROJECT)",
        )
    if isinstance(exc, gexc.BadRequest | gexc.InvalidArgument | gexc.FailedPrecondition):
        return BigQueryReadError(f"{table}: refused ({reason})", "invalid")
    return None


@dataclass
class StorageRead:
    """One read session: its Arrow schema, and its batches read stream after stream."""

    table: TableId
    billing: str  # the project the session is billed to
    schema: pa.Schema  # plain (no field metadata)
    estimated_rows: int  # the session's estimate (table metadata; 0 when BigQuery does not say)
    _client: Any = field(repr=False)
    _session: Any = field(repr=False)
    _wire_schema: pa.Schema = field(repr=False)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Every record batch of every stream, one at a time; empty batches skipped. The
        client resumes a broken stream at the offset it had reached (ReadRowsStream)."""
        rows = 0
        for stream in self._session.streams:
            try:
                for response in self._client.read_rows(stream.name):
                    payload = response.arrow_record_batch.serialized_record_batch
                    if not payload:
                        continue
                    batch = pa.ipc.read_record_batch(pa.py_buffer(payload), self._wire_schema)
                    if batch.num_rows:
                        rows += batch.num_rows
                        yield pa.RecordBatch.from_arrays(batch.columns, schema=self.schema)
            except Exception as exc:
                error = read_error(exc, self.table, self.billing)
                if error is None:
                    raise
                raise error from exc
        log.debug("read %d rows of %s through the Storage Read API", rows, self.table)


def open_read(
    connection: BigQueryConnection,
    table: TableId,
    columns: list[str] | None = None,
    row_filter: str | None = None,
    max_streams: int = 1,
    client: Any = None,
) -> StorageRead:
    """A read session on ``table`` billed to the connection's project: only ``columns`` (None:
    all), only the rows ``row_filter`` (a BigQuery SQL predicate) keeps. One stream by default:
    the batches arrive in one ordered sequence for one writer."""
    from google.cloud.bigquery_storage_v1 import types

    client = client or connection.read_client()
    options = types.ReadSession.TableReadOptions(selected_fields=columns or [], row_restriction=row_filter or "")
    try:
        session = client.create_read_session(
            parent=f"projects/{connection.project}",
            read_session=types.ReadSession(table=table.path, data_format=types.DataFormat.ARROW, read_options=options),
            max_stream_count=max_streams,
        )
    except Exception as exc:
        error = read_error(exc, table, connection.project)
        if error is None:
            raise
        raise error from exc
    wire = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
    return StorageRead(
        table, connection.project, plain_schema(wire), int(session.estimated_row_count or 0), client, session, wire
    )


__all__ = ["BigQueryReadError", "StorageRead", "TableId", "open_read", "plain_schema", "read_error"]
