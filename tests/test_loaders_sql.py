"""SQL databases -> warehouse through SQLAlchemy (Postgres, MariaDB, SQLite) and DuckDB's postgres
extension: the same table, the same incremental runs, the same rows read back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from loaders import jobs, state
from loaders.config import SqlSourceConfig, SqlTableConfig
from loaders.warehouse.duckdb import DuckDBWarehouse
from tests.loader_fixtures import rows_by_key

T0 = datetime(2024, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)
ROWS = [
    {
        "item_id": 1,
        "title": 'Café "crème" l\'été',
        "price": Decimal("9.99"),
        "stock": 5,
        "is_active": True,
        "updated_at": T0,
    },
    {"item_id": 2, "title": None, "price": None, "stock": None, "is_active": None, "updated_at": T0},
    {
        "item_id": 3,
        "title": "zero",
        "price": Decimal("0.00"),
        "stock": 0,
        "is_active": False,
        "updated_at": T0.replace(second=1),
    },
]


@dataclass
class SqlDatabase:
    url: str  # what loaders.yml would hold
    schema: str | None
    naive_timestamps: bool  # MySQL DATETIME and SQLite keep no zone: values are stored as UTC wall time
    engine: Any
    reader: str  # loaders.yml reader: sqlalchemy or duckdb

    def rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.naive_timestamps:
            return rows
        return [{**r, "updated_at": r["updated_at"].replace(tzinfo=None)} for r in rows]


def _items_table(metadata: Any) -> Any:
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

    return sa.Table(
        "items",
        metadata,
        sa.Column("item_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("title", sa.String(200)),
        sa.Column("price", sa.Numeric(10, 2)),
        sa.Column("stock", sa.Integer),
        sa.Column("is_active", sa.Boolean),
        sa.Column("updated_at", sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")),
    )


SOURCES = [
    pytest.param("sqlite", id="sqlite-sqlalchemy"),
    pytest.param("postgres", id="postgres-sqlalchemy", marks=pytest.mark.postgres),
    pytest.param("postgres-duckdb", id="postgres-duckdb-extension", marks=pytest.mark.postgres),
    pytest.param("mariadb", id="mariadb-sqlalchemy", marks=pytest.mark.mysql),
]


@pytest.fixture(params=SOURCES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlDatabase]:
    import sqlalchemy as sa

    from loaders.sources.sql import sqlalchemy_url

    kind = request.param
    if kind == "sqlite":
        url, schema = f"sqlite:///{tmp_path / 'shop.db'}", None
    elif kind.startswith("postgres"):
        url, schema = request.getfixturevalue("pg_database").url(), "shop"
    else:
        server = request.getfixturevalue("mariadb")
        name = f"shop_{tmp_path.name[-8:].replace('-', '_')}"
        with sa.create_engine(server.url()).begin() as conn:
            conn.exec_driver_sql(f"create database `{name}`")
        url, schema = server.url(name), None
    engine = sa.create_engine(sqlalchemy_url(url))
    if schema:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'create schema "{schema}"')
    metadata = sa.MetaData(schema=schema)
    _items_table(metadata)
    metadata.create_all(engine)
    db = SqlDatabase(
        url, schema, kind in ("sqlite", "mariadb"), engine, "duckdb" if kind == "postgres-duckdb" else "sqlalchemy"
    )
    try:
        yield db
    finally:
        engine.dispose()


def _write(db: SqlDatabase, rows: list[dict[str, Any]], update: bool = False) -> None:
    import sqlalchemy as sa

    table = _items_table(sa.MetaData(schema=db.schema))
    with db.engine.begin() as conn:
        for row in db.rows(rows):
            if update:
                conn.execute(table.update().where(table.c.item_id == row["item_id"]).values(**row))
            else:
                conn.execute(table.insert().values(**row))


def _loaded(warehouse: DuckDBWarehouse, db: SqlDatabase) -> list[dict[str, Any]]:
    rows = rows_by_key(warehouse, "raw_shop", "items", "item_id", drop=("_loaded_at",))
    for row in rows:  # MySQL has no boolean: TINYINT(1) arrives as 0/1
        if row["is_active"] is not None:
            row["is_active"] = bool(row["is_active"])
    return rows


def test_full_then_incremental_by_cursor_without_boundary_duplicates(database: SqlDatabase, tmp_path: Path) -> None:
    _write(database, ROWS)
    source = SqlSourceConfig(
        url=database.url,
        source_schema=database.schema,
        target_schema="raw_shop",
        reader=database.reader,  # type: ignore[arg-type]
        tables=[SqlTableConfig(name="items", primary_key=["item_id"], cursor="updated_at")],
    )
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    try:
        [first] = jobs.load_sql("shop", source, warehouse)
        assert (first.read, first.result.inserted) == (3, 3)
        assert _loaded(warehouse, database) == database.rows(ROWS)
        assert state.get_watermark(warehouse, "sql:shop:items") == database.rows(ROWS)[2]["updated_at"]

        later = T0.replace(minute=5)
        _write(database, [{**ROWS[1], "title": "now named", "updated_at": later}], update=True)
        _write(database, [{**ROWS[0], "item_id": 4, "updated_at": later}])
        [second] = jobs.load_sql("shop", source, warehouse)

        # read: row 3 (at the watermark, found unchanged) and the two changed ones
        assert (second.read, second.result.inserted, second.result.updated, second.result.unchanged) == (3, 1, 1, 1)
        loaded = _loaded(warehouse, database)
        expected = database.rows(
            [
                ROWS[0],
                {**ROWS[1], "title": "now named", "updated_at": later},
                ROWS[2],
                {**ROWS[0], "item_id": 4, "updated_at": later},
            ]
        )
        assert loaded == expected
    finally:
        warehouse.close()
