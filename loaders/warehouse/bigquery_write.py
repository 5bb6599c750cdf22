"""Arrow batches into a BigQuery table through the Storage Write API, all or nothing.

- The row message is a proto2 descriptor built at run time from the Arrow schema (no ``.proto``
  file, no ``protoc``). Every field is ``optional``: a NULL is an absent field and arrives as
  NULL in every type, never as 0, '' or false.
- Values are encoded exactly: TIMESTAMP as int64 microseconds since the epoch (Arrow's own
  representation, no float on the way), DATE as int32 days, NUMERIC/BIGNUMERIC as their
  decimal text, DATETIME and TIME as civil-time text.
- Stream type: PENDING, then finalize and one BatchCommitWriteStreams. Rows become visible
  only at the commit, all together; a failure before it leaves the table as it was (the
  stream is abandoned and expires). The default stream would make each append visible at
  once (at-least-once, partial loads on failure), which a staging table does not need.
- AppendRows requests are cut by serialized size (``MAX_REQUEST_BYTES``, under the API's 10 MB
  limit), not by a row count, so wide and narrow rows alike stay under the limit. Every
  response is checked; an error names the table and the row range of the failed request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from loaders.errors import LoaderError
from loaders.warehouse import proto_rows

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 9 * 1024 * 1024  # AppendRows allows 10 MB; keep room for the schema and framing
_MESSAGE_NAME = "RoundtripRow"


def _field_type(type_: pa.DataType, column: str) -> int:
    from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

    if pa.types.is_boolean(type_):
        return F.TYPE_BOOL
    if pa.types.is_timestamp(type_) and type_.tz is None:
        return F.TYPE_STRING  # DATETIME: civil time as text (a zone-less timestamp is no instant)
    if pa.types.is_integer(type_) or pa.types.is_timestamp(type_):
        return F.TYPE_INT64
    if pa.types.is_date(type_):
        return F.TYPE_INT32
    if pa.types.is_floating(type_):
        return F.TYPE_DOUBLE
    if pa.types.is_binary(type_) or pa.types.is_large_binary(type_):
        return F.TYPE_BYTES
    if (
        pa.types.is_string(type_)
        or pa.types.is_large_string(type_)
        or pa.types.is_decimal(type_)
        or pa.types.is_time(type_)
    ):
        return F.TYPE_STRING
    raise LoaderError(f"column {column!r}: Arrow type {type_} has no Storage Write encoding here")


@dataclass
class RowMessage:
    """The runtime proto2 message for one Arrow schema."""

    descriptor: Any  # google.protobuf.descriptor_pb2.DescriptorProto, sent as writer_schema
    cls: type  # the generated message class
    field_types: tuple[int, ...] = ()  # FieldDescriptorProto types, field 1 first

    @classmethod
    def for_schema(cls, schema: pa.Schema) -> RowMessage:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        proto_file = descriptor_pb2.FileDescriptorProto(
            name="roundtrip_row.proto", package="roundtrip", syntax="proto2"
        )
        message = proto_file.message_type.add(name=_MESSAGE_NAME)
        for number, field in enumerate(schema, start=1):
            message.field.add(
                name=field.name,
                number=number,
                type=_field_type(field.type, field.name),  # type: ignore[arg-type]
                label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
            )
        pool = descriptor_pool.DescriptorPool()
        pool.Add(proto_file)
        found = pool.FindMessageTypeByName(f"roundtrip.{_MESSAGE_NAME}")
        descriptor = descriptor_pb2.DescriptorProto()
        found.CopyToProto(descriptor)
        types = tuple(_field_type(f.type, f.name) for f in schema)
        return cls(descriptor, message_factory.GetMessageClass(found), types)

    def serialize(self, batch: pa.Table) -> Iterator[bytes]:
        """Each row as serialized bytes; NULL fields are left out. Column at a time
        (``proto_rows``) where the batch's types are the ones the message was built for and
        ``proto_rows`` writes them; otherwise a message per row (protobuf takes ``field=None``
        in a constructor as the field not set)."""
        if self.field_types == tuple(_field_type(f.type, f.name) for f in batch.schema):
            encoded = proto_rows.encode(batch)
            if encoded is not None:
                yield from encoded
                return
        names = batch.column_names
        columns = [_wire_values(batch.column(i)) for i in range(batch.num_columns)]
        make = self.cls
        for values in zip(*columns):
            yield make(**dict(zip(names, values))).SerializeToString()


def _wire_values(column: pa.ChunkedArray) -> list[Any]:
    type_ = column.type
    if pa.types.is_timestamp(type_):
        micros = column.cast(pa.timestamp("us", tz=type_.tz)) if type_.unit != "us" else column
        if type_.tz is None:  # DATETIME: civil time as text
            return [None if v is None else v.isoformat(sep=" ") for v in micros.to_pylist()]
        return micros.cast(pa.int64()).to_pylist()
    if pa.types.is_date(type_):
        return column.cast(pa.date32()).cast(pa.int32()).to_pylist()
    if pa.types.is_decimal(type_):
        return pc.cast(column, pa.string()).to_pylist()
    if pa.types.is_time(type_):
        return [None if v is None else v.isoformat() for v in column.to_pylist()]
    return column.to_pylist()


@dataclass(frozen=True)
class WriteStats:
    rows: int
    requests: int


def write_pending(
    write_client: Any,
    table_path: str,
    batches: Iterable[pa.Table],
    where: str,
    max_request_bytes: int = MAX_REQUEST_BYTES,
) -> WriteStats:
    """Append every batch to a new PENDING stream of ``table_path``, then commit it.

    ``where`` names the table in error messages (rows are numbered from 1 in staging order).
    """
    from google.cloud.bigquery_storage_v1 import types

    stream = write_client.create_write_stream(
        parent=table_path, write_stream=types.WriteStream(type_=types.WriteStream.Type.PENDING)
    )
    sent: list[tuple[int, int]] = []  # (first row offset, rows) per request, in order

    def requests() -> Iterator[Any]:
        message: RowMessage | None = None
        offset = 0
        for batch in batches:
            if message is None:
                message = RowMessage.for_schema(batch.schema)
            for rows in sized_requests(message.serialize(batch), where, offset, max_request_bytes):
                proto_rows = types.AppendRowsRequest.ProtoData(
                    writer_schema=types.ProtoSchema(proto_descriptor=message.descriptor),
                    rows=types.ProtoRows(serialized_rows=rows),
                )
                sent.append((offset, len(rows)))
                # every request names the stream and carries the schema (the emulator needs both)
                yield types.AppendRowsRequest(write_stream=stream.name, offset=offset, proto_rows=proto_rows)
                offset += len(rows)

    failure: list[BaseException] = []

    def guarded() -> Iterator[Any]:
        """gRPC swallows an exception raised while iterating requests (a bad source row, say)
        into 'Exception iterating requests!': keep it to raise it as it was."""
        try:
            yield from requests()
        except BaseException as exc:
            failure.append(exc)
            raise

    received = 0
    try:
        for response in write_client.append_rows(guarded()):
            first, count = sent[received]
            received += 1
            problem = _append_problem(response, first)
            if problem:
                raise LoaderError(f"{where}: rows {first + 1}-{first + count} were refused by BigQuery: {problem}")
    except Exception:
        if failure:
            raise failure[0] from None
        raise
    if received != len(sent):
        raise LoaderError(f"{where}: {len(sent)} append requests sent, {received} answered")
    total = sum(count for _, count in sent)
    write_client.finalize_write_stream(name=stream.name)
    commit = write_client.batch_commit_write_streams(
        types.BatchCommitWriteStreamsRequest(parent=table_path, write_streams=[stream.name])
    )
    if commit.stream_errors:
        raise LoaderError(f"{where}: commit of {total} rows failed: {list(commit.stream_errors)}")
    log.debug("%s: %d rows in %d append requests, committed", where, total, len(sent))
    return WriteStats(total, len(sent))


def framed_size(row: bytes) -> int:
    """A serialized row's share of a request: the row plus its field tag and length prefix."""
    return len(row) + 8  # tag (1) + varint length (up to 5), generously


def sized_requests(rows: Iterable[bytes], where: str, offset: int, max_bytes: int) -> Iterator[list[bytes]]:
    """Group serialized rows, in order, into requests of at most ``max_bytes``."""
    chunk: list[bytes] = []
    size = 0
    for row in rows:
        framed = len(row) + 8  # framed_size(row), inlined: this loop runs once per row
        if size + framed > max_bytes:
            if framed > max_bytes:
                position = offset + len(chunk) + 1
                raise LoaderError(f"{where}: row {position} is {len(row):,} bytes, over the AppendRows request limit")
            if chunk:
                offset += len(chunk)
                yield chunk
                chunk, size = [], 0
        chunk.append(row)
        size += framed
    if chunk:
        yield chunk


def _append_problem(response: Any, first: int) -> str | None:
    if response.row_errors:
        return "; ".join(f"row {first + e.index + 1}: {e.message}" for e in response.row_errors)
    if response.error and response.error.code:
        return f"{response.error.code} {response.error.message}"
    return None
