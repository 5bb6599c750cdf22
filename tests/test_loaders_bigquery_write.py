"""The Storage Write path on its own: byte-sized requests, checked responses, all-or-nothing commit."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from loaders.errors import LoaderError
from loaders.warehouse.bigquery_write import RowMessage, framed_size, sized_requests, write_pending


def test_requests_stay_under_the_byte_limit_and_keep_every_row_in_order() -> None:
    rows = [bytes([i % 256]) * size for i, size in enumerate([10, 500, 30, 990, 1, 400, 600, 200] * 5)]

    requests = list(sized_requests(rows, "t", 0, max_bytes=1000))

    assert [row for request in requests for row in request] == rows
    assert all(sum(framed_size(r) for r in request) <= 1000 for request in requests)
    # greedy: a request closes only when the next row would not fit
    for request, following in itertools.pairwise(requests):
        assert sum(framed_size(r) for r in request) + framed_size(following[0]) > 1000


def test_a_row_over_the_limit_is_an_error_that_names_it() -> None:
    with pytest.raises(LoaderError, match=r"t: row 12 is 2,000 bytes"):
        list(sized_requests([b"x", b"y" * 2000], "t", 10, max_bytes=1000))


def test_row_message_leaves_nulls_out_and_encodes_timestamps_as_microseconds() -> None:
    batch = pa.table(
        {
            "id": pa.array([1, None], pa.int64()),
            "at": pa.array([1_700_000_000_123_456, None], pa.timestamp("us", tz="UTC")),
            "day": pa.array([19_000, None], pa.date32()),
        }
    )
    message = RowMessage.for_schema(batch.schema)
    first, second = (message.cls.FromString(row) for row in message.serialize(batch))
    assert (first.id, first.at, first.day) == (1, 1_700_000_000_123_456, 19_000)
    assert [second.HasField(name) for name in ("id", "at", "day")] == [False, False, False]


def _clients(emulator: Any) -> tuple[Any, Any, str]:
    from loaders.warehouse.bigquery import BigQuerySettings

    settings = BigQuerySettings(
        project=emulator.project, api_endpoint=emulator.rest_url, storage_endpoint=emulator.grpc_endpoint
    )
    client, write_client = settings.clients()
    return client, write_client, settings.project


@pytest.fixture
def dataset(bigquery_emulator: Any, schema_name: str) -> Iterator[tuple[Any, Any, str]]:
    client, write_client, project = _clients(bigquery_emulator)
    client.create_dataset(f"{project}.{schema_name}")
    yield client, write_client, f"{project}.{schema_name}"
    client.close()


@pytest.mark.bigquery
def test_many_small_requests_commit_every_row_once(dataset: tuple[Any, Any, str]) -> None:
    from google.cloud import bigquery

    client, write_client, prefix = dataset
    client.create_table(
        bigquery.Table(f"{prefix}.t", schema=[bigquery.SchemaField("id", "INT64"), bigquery.SchemaField("s", "STRING")])
    )
    batches = [pa.table({"id": list(range(start, start + 100)), "s": ["é" * 40] * 100}) for start in (0, 100, 200)]
    project, name = prefix.split(".")

    stats = write_pending(
        write_client, write_client.table_path(project, name, "t"), batches, "t", max_request_bytes=2_000
    )

    assert stats.rows == 300 and stats.requests >= 300 * 80 // 2_000
    got = sorted(row["id"] for row in client.query(f"select id from `{prefix}.t`").result())
    assert got == list(range(300))


@pytest.mark.bigquery
def test_a_refused_append_names_the_table_and_rows_and_commits_nothing(dataset: tuple[Any, Any, str]) -> None:
    from google.cloud import bigquery

    client, write_client, prefix = dataset
    client.create_table(
        bigquery.Table(f"{prefix}.t", schema=[bigquery.SchemaField("id", "INT64"), bigquery.SchemaField("n", "INT64")])
    )
    project, name = prefix.split(".")
    good = pa.table({"id": [1, 2], "n": ["1", "2"]})
    bad = pa.table({"id": [3, 4], "n": ["3", "four"]})  # the table wants INT64: BigQuery refuses 'four'

    with pytest.raises(LoaderError, match=r"people: rows 3-4 were refused by BigQuery"):
        write_pending(
            write_client, write_client.table_path(project, name, "t"), [good, bad], "people", max_request_bytes=40
        )

    assert list(client.query(f"select * from `{prefix}.t`").result()) == []


def test_rows_encoded_a_column_at_a_time_are_the_bytes_protobuf_writes() -> None:
    """``proto_rows`` against a message built per row by protobuf itself, on edge values of
    every type it writes (NULLs, extremes of each varint length, NaN, -0.0, long and empty text)."""
    from decimal import Decimal

    from loaders.warehouse import proto_rows
    from loaders.warehouse.bigquery_write import _wire_values

    ints = [0, 1, 127, 128, 16_383, 16_384, 2**35, -1, -(2**63), 2**63 - 1, None, 300]
    n = len(ints)
    batch = pa.table(
        {
            "i64": pa.array(ints, pa.int64()),
            "i32": pa.array([None if v is None else v % 2**31 - 2**30 for v in ints], pa.int32()),
            "flag": pa.array([True, False, None] * (n // 3), pa.bool_()),
            "x": pa.array(
                [
                    0.0,
                    -0.0,
                    float("nan"),
                    float("inf"),
                    -1e308,
                    1.5,
                    None,
                    2.2250738585072014e-308,
                    3.0,
                    1e-7,
                    -2.5,
                    7.0,
                ]
            ),
            "f32": pa.array([1.5, None, -3.25, 0.1] * (n // 4), pa.float32()),
            "name": pa.array(["", "Zoë ✓", None, "x" * 200, "a" * 20_000, "q\"'\n", "\x00", None, "é", "z", "", "end"]),
            "raw": pa.array([b"\x00\xff", None, b"", b"abc"] * (n // 4), pa.binary()),
            "at": pa.array([1_700_000_000_123_456, -1, 0, None] * (n // 4), pa.timestamp("us", tz="UTC")),
            "at_ms": pa.array([1_700_000_000_123, None, -5, 0] * (n // 4), pa.timestamp("ms", tz="UTC")),
            "day": pa.array([19_000, -719_162, None, 0] * (n // 4), pa.date32()),
            "price": pa.array(
                [Decimal("12.50"), None, Decimal("-0.01"), Decimal("0")] * (n // 4), pa.decimal128(10, 2)
            ),
        }
    )
    message = RowMessage.for_schema(batch.schema)
    columns = [_wire_values(batch.column(i)) for i in range(batch.num_columns)]
    by_protobuf = [
        message.cls(**{k: v for k, v in zip(batch.column_names, values) if v is not None}).SerializeToString()
        for values in zip(*columns)
    ]

    assert proto_rows.encode(batch) == by_protobuf
    assert list(message.serialize(batch)) == by_protobuf
    assert proto_rows.encode(pa.table({"t": pa.array([1], pa.time64("us"))})) is None  # TIME: messages


def test_the_sample_users_encode_to_protobufs_own_bytes() -> None:
    """What the loader sends for the app's users (NULLs, fractional epochs, offsets in text):
    column at a time, the same bytes as a message per row."""
    from datetime import UTC, datetime

    from loaders.warehouse import proto_rows
    from loaders.warehouse.bigquery_write import _wire_values
    from roundtrip.dev.sample_data.model import SampleConfig, users_table

    users = users_table(SampleConfig(users=5000))
    users = users.append_column(
        "signup_ts", pa.array((users.column("signup_at").to_numpy() * 1e6).astype("int64"), pa.timestamp("us", "UTC"))
    ).append_column("loaded_at", pa.array([datetime(2026, 12, 2, tzinfo=UTC)] * users.num_rows))
    message = RowMessage.for_schema(users.schema)
    columns = [_wire_values(users.column(i)) for i in range(users.num_columns)]
    by_protobuf = [
        message.cls(**{k: v for k, v in zip(users.column_names, values) if v is not None}).SerializeToString()
        for values in zip(*columns)
    ]
    assert proto_rows.encode(users) == by_protobuf
