"""Warehouse -> Snappy Parquet under {destination}/{YYYYMMDD}/{table}/, read back equal."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loaders.config import ExportConfig, ExportTableConfig
from loaders.export import export_tables
from loaders.warehouse import Warehouse

DAY = date(2024, 5, 17)
USERS = pa.table(
    {
        "user_id": pa.array([1, 2, 3], pa.int64()),
        "city": ["Ajaccio", None, 'Saint-Étienne "SE"'],
        "credit": pa.array([Decimal("150.00"), None, Decimal("0.50")], pa.decimal128(10, 2)),
        "seen_at": pa.array(
            [datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC), None, datetime(2024, 5, 2, tzinfo=UTC)],
            pa.timestamp("us", tz="UTC"),
        ),
        "secret": ["a", "b", "c"],  # not exported
    }
)
SELECTED = ["user_id", "city", "credit", "seen_at"]


def _check(path: Path | str, filesystem: Any = None) -> None:
    parquet = pq.ParquetFile(path, filesystem=filesystem)
    assert parquet.metadata.row_group(0).column(0).compression == "SNAPPY"
    rows = sorted(parquet.read().to_pylist(), key=lambda r: r["user_id"])
    assert [list(r) for r in rows] == [SELECTED] * 3
    expected = USERS.select(SELECTED).to_pylist()
    for got, want in zip(rows, expected):
        assert got["user_id"] == want["user_id"] and got["city"] == want["city"]
        assert got["credit"] == want["credit"]  # exact decimals
        assert (got["seen_at"] and got["seen_at"].replace(tzinfo=UTC)) == want["seen_at"]


def test_export_writes_selected_columns_as_snappy_parquet_that_reads_back_equal(
    warehouse: Warehouse, tmp_path: Path, schema_name: str, request: pytest.FixtureRequest
) -> None:
    warehouse.merge(schema_name, "enriched_user", [USERS], ["user_id"])
    tables = [ExportTableConfig(name="enriched_user", columns=SELECTED)]
    if warehouse.name == "bigquery":
        emulator = request.getfixturevalue("bigquery_emulator")
        # emulator gap: its extract job neither expands '*' nor creates folders (a real bucket
        # has no folders to create): one file per table, and the day's folder made here
        (emulator.gcs_root / "exports" / "20240517" / "enriched_user").mkdir(parents=True)
        export = ExportConfig(destination="gs://exports", dataset=schema_name, tables=tables, single_file=True)
        [report] = export_tables(warehouse, export, DAY)
        assert report.destination == "gs://exports/20240517/enriched_user/enriched_user.parquet"
        _check(emulator.gcs_root / "exports" / "20240517" / "enriched_user" / "enriched_user.parquet")
        leftovers = [t.table_id for t in warehouse.client.list_tables("_roundtrip") if t.table_id.startswith("_export")]  # type: ignore[attr-defined]
        assert leftovers == [], "temporary tables are deleted"
    else:
        export = ExportConfig(destination=str(tmp_path / "bucket"), dataset=schema_name, tables=tables)
        [report] = export_tables(warehouse, export, DAY)
        _check(tmp_path / "bucket" / "20240517" / "enriched_user" / "enriched_user.parquet")
    assert report.rows == 3


@pytest.mark.object_store
def test_export_from_duckdb_to_s3(s3_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    from loaders.warehouse.duckdb import DuckDBWarehouse

    for name, value in s3_emulator.env().items():
        monkeypatch.setenv(name, value)
    s3_emulator.create_bucket("exports")
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    try:
        warehouse.merge("marts", "enriched_user", [USERS], ["user_id"])
        export = ExportConfig(
            destination="s3://exports/reco",
            dataset="marts",
            tables=[ExportTableConfig(name="enriched_user", columns=SELECTED)],
        )
        [report] = export_tables(warehouse, export, DAY)
    finally:
        warehouse.close()
    assert (report.destination, report.rows) == ("s3://exports/reco/20240517/enriched_user/enriched_user.parquet", 3)
    _check("exports/reco/20240517/enriched_user/enriched_user.parquet", filesystem=fsspec.filesystem("s3"))


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """DuckDB, or Postgres through a keyword conninfo holding a quote, a semicolon and a double quote."""
    if request.param == "duckdb":
        from loaders.warehouse.duckdb import DuckDBWarehouse

        wh: Any = DuckDBWarehouse(tmp_path / "w.duckdb")
    else:
        from loaders.warehouse.postgres import PostgresWarehouse

        pg = request.getfixturevalue("pg_database")
        conninfo = (
            f"host={pg.host} port={pg.port} dbname={pg.dbname} user={pg.user} "
            "application_name='it\\'s; \"export\"'" + (f" password={pg.password}" if pg.password else "")
        )
        wh = PostgresWarehouse(conninfo)
    yield wh
    wh.close()


def test_names_and_paths_with_quotes_and_semicolons_are_data_not_sql(sql_warehouse: Any, tmp_path: Path) -> None:
    schema, table = 'it\'s "odd"; x', "users;'1'"
    sql_warehouse.merge(schema, table, [USERS], ["user_id"])
    destination = tmp_path / 'it\'s; "exports"'
    export = ExportConfig(
        destination=str(destination), dataset=schema, tables=[ExportTableConfig(name=table, columns=SELECTED)]
    )

    [report] = export_tables(sql_warehouse, export, DAY)

    written = destination / "20240517" / table / f"{table}.parquet"
    assert (report.destination, report.rows) == (str(written), 3)
    _check(written)
