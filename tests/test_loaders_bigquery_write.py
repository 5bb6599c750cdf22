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
