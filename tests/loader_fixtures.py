"""A ``warehouse`` fixture parametrized over every loader target (pytest plugin).

Tests that take ``warehouse`` run once per target: DuckDB (a file in tmp_path), PostgreSQL (a
fresh database on the session server) and BigQuery (the session emulator). ``schema_name``
gives each test its own schema / dataset, so tests on one server never see each other's tables.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from loaders.warehouse import Warehouse

TARGET_PARAMS = [
    pytest.param("duckdb", id="duckdb"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("bigquery", id="bigquery", marks=pytest.mark.bigquery),
]


@pytest.fixture(params=TARGET_PARAMS)
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    wh: Warehouse
    if request.param == "duckdb":
        from loaders.warehouse.duckdb import DuckDBWarehouse

        wh = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    elif request.param == "postgres":
        from loaders.warehouse.postgres import PostgresWarehouse

        wh = PostgresWarehouse(request.getfixturevalue("pg_database").url())
    else:
        from loaders.warehouse.bigquery import BigQuerySettings, BigQueryWarehouse

        emulator = request.getfixturevalue("bigquery_emulator")
        wh = BigQueryWarehouse(
            BigQuerySettings(
                project=emulator.project,
                api_endpoint=emulator.rest_url,
                storage_endpoint=emulator.grpc_endpoint,
            )
        )
    try:
        yield wh
    finally:
        wh.close()


@pytest.fixture
def schema_name() -> str:
    """A schema / dataset name of this test's own."""
    return f"t_{uuid.uuid4().hex[:10]}"


def rows_by_key(warehouse: Warehouse, schema: str, table: str, key: str, drop: tuple[str, ...] = ()) -> list[dict]:  # type: ignore[type-arg]
    """The table's rows as dicts sorted by ``key``, without the ``drop`` columns."""
    data = warehouse.read_table(schema, table)
    assert data is not None, f"{schema}.{table} does not exist"
    rows = [{k: v for k, v in row.items() if k not in drop} for row in data.to_pylist()]
    return sorted(rows, key=lambda r: r[key])
