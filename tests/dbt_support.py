"""Build the dbt project from tests: raw rows into a warehouse, `dbt` in a subprocess with its own
target folder, and every relation read back as rows that compare across engines.

Raw tables have the columns the loaders write (loaders/warehouse), so the models see in tests what
they see in production. Nothing is mocked: DuckDB files and the session's real Postgres server.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from roundtrip.core.contract import BRONZE_FIELDS
from roundtrip.core.dbt import dbt_command
from roundtrip.core.paths import PROJECT_ROOT

EXTENSION_DIR = PROJECT_ROOT / ".duckdb_extensions"
# bronze keeps every source field as text (loaders/loaders.yml)
ORDER_FIELDS, CLICK_FIELDS = BRONZE_FIELDS["orders"], BRONZE_FIELDS["clicks"]

# (schema, table) -> (column, type), as the loaders create them.
RAW_TABLES: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("raw_app", "users"): [
        ("user_id", "bigint"),
        ("email", "varchar"),
        ("display_name", "varchar"),
        ("iris_code", "varchar"),
        ("birth_year", "bigint"),
        ("marketing_opt_in", "bigint"),
        ("signup_at", "timestamptz"),
        ("updated_at", "timestamptz"),
        ("last_login_at", "timestamptz"),
        ("_loaded_at", "timestamptz"),
    ],
    ("raw_catalog", "items"): [
        ("item_id", "bigint"),
        ("title", "varchar"),
        ("category", "varchar"),
        ("price", "decimal(10, 2)"),
        ("stock", "integer"),
        ("is_active", "boolean"),
        ("is_adult", "boolean"),
        ("created_at", "timestamptz"),
        ("updated_at", "timestamptz"),
        ("_loaded_at", "timestamptz"),
    ],
    ("bronze", "orders"): [
        *((name, "varchar") for name in ORDER_FIELDS),
        ("_source_file", "varchar"),
        ("_source_line", "bigint"),
        ("_loaded_at", "timestamptz"),
        ("_missing_fields", "varchar"),
    ],
    ("bronze", "clicks"): [
        *((name, "varchar") for name in CLICK_FIELDS),
        ("_source_file", "varchar"),
        ("_source_line", "bigint"),
        ("_loaded_at", "timestamptz"),
        ("_missing_fields", "varchar"),
    ],
}


def base_environment(duckdb_path: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment without the caller's ROUNDTRIP_* / DBT_* settings, pointed at
    ``duckdb_path`` (and whatever ``extra`` adds, e.g. a Postgres endpoint's dbt_env())."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUNDTRIP_", "DBT_"))}
    env.update(
        {
            "ROUNDTRIP_DUCKDB_PATH": str(duckdb_path),
            "ROUNDTRIP_DUCKDB_EXTENSION_DIR": str(EXTENSION_DIR),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
    )
    env.update(extra or {})
    return env


def synced_models(manifest: Mapping[str, Any]) -> set[str]:
    """The models the reverse syncs read (the parents of the exposures with a sync), by name:
    what a test derives from the project instead of listing the demo's marts."""
    nodes = manifest["nodes"]
    return {
        nodes[uid]["name"]
        for exposure in manifest["exposures"].values()
        if exposure.get("type") == "application"
        for uid in exposure["depends_on"]["nodes"]
        if uid in nodes and nodes[uid]["resource_type"] == "model"
    }


@dataclass(frozen=True)
class Relation:
    resource_type: str  # model | seed | snapshot
    name: str
    schema: str
    identifier: str

    @property
    def sql_name(self) -> str:
        return f'"{self.schema}"."{self.identifier}"'


@dataclass(frozen=True)
class DbtProject:
    """The project as one test uses it: its own target folder and logs, its own environment."""

    target_path: Path
    env: Mapping[str, str]

    def run(self, *args: str, target: str = "duckdb") -> str:
        """``dbt <args>``; fails the test with dbt's output when dbt fails."""
        command = dbt_command(["--no-use-colors", *args], target=target, target_path=self.target_path)
        done = subprocess.run(
            command, cwd=PROJECT_ROOT, env=dict(self.env), capture_output=True, text=True, timeout=900
        )
        if done.returncode != 0:
            raise AssertionError(f"`dbt {' '.join(args)}` failed:\n{done.stdout[-8000:]}\n{done.stderr[-2000:]}")
        return done.stdout

    def relations(self, resource_types: Sequence[str] = ("model", "seed", "snapshot")) -> list[Relation]:
        """Every relation the last parse knows, from the manifest."""
        manifest = json.loads((self.target_path / "manifest.json").read_text())
        found = [
            Relation(node["resource_type"], node["name"], node["schema"], node.get("alias") or node["name"])
            for node in manifest["nodes"].values()
            if node["resource_type"] in resource_types and node["config"].get("enabled", True)
        ]
        return sorted(found, key=lambda r: (r.schema, r.identifier))

    def executed_sql(self) -> str:
        """The SQL dbt sent to the warehouse (its debug log), to check *how* a model was built."""
        return (self.target_path / "logs" / "dbt.log").read_text()

    def forget_executed_sql(self) -> None:
        (self.target_path / "logs" / "dbt.log").unlink(missing_ok=True)


# ------------------------------------------------------------------ raw data


def load_raw_tables(duckdb_path: Path, rows: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]]) -> None:
    """Append rows (dicts of column -> value; missing columns are NULL) to the raw tables of a
    DuckDB warehouse, creating the tables with the loaders' columns when needed."""
    from roundtrip.core.duckdb_extensions import connect

    con = connect(duckdb_path)
    try:
        for (schema, table), table_rows in rows.items():
            columns = [name for name, _ in RAW_TABLES[(schema, table)]]
            columns_ddl = ", ".join(f"{name} {type_}" for name, type_ in RAW_TABLES[(schema, table)])
            con.execute(f"create schema if not exists {schema}")
            con.execute(f"create table if not exists {schema}.{table} ({columns_ddl})")
            unknown = {k for r in table_rows for k in r} - set(columns)
            assert not unknown, f"{schema}.{table} has no column(s) {sorted(unknown)}"
            if table_rows:
                placeholders = ", ".join("?" for _ in columns)
                con.executemany(
                    f"insert into {schema}.{table} ({', '.join(columns)}) values ({placeholders})",
                    [[r.get(c) for c in columns] for r in table_rows],
                )
    finally:
        con.close()


def delete_raw_rows(duckdb_path: Path, schema: str, table: str, where: str) -> int:
    """Remove raw rows (e.g. a landed file the loader is about to replace)."""
    from roundtrip.core.duckdb_extensions import connect

    con = connect(duckdb_path)
    try:
        row = con.execute(f"delete from {schema}.{table} where {where}").fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()


def copy_raw_tables_to_postgres(duckdb_path: Path, postgres_url: str) -> None:
    """Make the raw tables of a Postgres database equal to those of a DuckDB warehouse (created the
    first time, then emptied and refilled in place: the staging views depend on them)."""
    from roundtrip.core.duckdb_extensions import connect

    con = connect(extensions=("postgres",))
    try:
        con.execute(f"attach '{duckdb_path}' as source_warehouse (read_only)")
        con.execute(f"attach '{postgres_url}' as target_postgres (type postgres)")
        for schema, table in RAW_TABLES:
            existing = con.execute(
                "select count(*) from postgres_query('target_postgres', "
                f"'select 1 from information_schema.tables where table_schema = ''{schema}'' "
                f"and table_name = ''{table}''')"
            ).fetchone()
            if existing and existing[0]:
                con.execute(f"delete from target_postgres.{schema}.{table}")
                con.execute(
                    f"insert into target_postgres.{schema}.{table} select * from source_warehouse.{schema}.{table}"
                )
            else:
                con.execute(f"create schema if not exists target_postgres.{schema}")
                con.execute(
                    f"create table target_postgres.{schema}.{table} as select * from source_warehouse.{schema}.{table}"
                )
    finally:
        con.close()


_BIGQUERY_TYPES = {
    "bigint": "INT64",
    "integer": "INT64",
    "varchar": "STRING",
    "boolean": "BOOL",
    "timestamptz": "TIMESTAMP",
    "decimal(10, 2)": "NUMERIC",
}


def _bigquery_literal(value: Any, type_: str) -> str:
    bq_type = _BIGQUERY_TYPES[type_]
    if value is None:
        return f"cast(null as {bq_type})"
    if bq_type == "STRING":
        return json.dumps(value, ensure_ascii=False)  # a valid GoogleSQL string literal
    if bq_type == "TIMESTAMP":
        return f"timestamp '{value.isoformat()}'"
    if bq_type == "NUMERIC":
        return f"numeric '{value}'"
    if bq_type == "BOOL":
        return "true" if value else "false"
    return str(int(value))


def load_raw_tables_to_bigquery(
    client: Any, project: str, rows: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]]
) -> None:
    """The raw tables in BigQuery (or its emulator): datasets, tables with the loaders' columns, rows."""
    for (schema, table), table_rows in rows.items():
        columns = RAW_TABLES[(schema, table)]
        relation = f"`{project}.{schema}.{table}`"
        client.query(f"create schema if not exists `{project}.{schema}`").result()
        ddl = ", ".join(f"{name} {_BIGQUERY_TYPES[type_]}" for name, type_ in columns)
        client.query(f"create or replace table {relation} ({ddl})").result()
        values = ",\n".join(
            "(" + ", ".join(_bigquery_literal(row.get(name), type_) for name, type_ in columns) + ")"
            for row in table_rows
        )
        if values:
            client.query(f"insert into {relation} values {values}").result()


# ------------------------------------------------------------------ reading rows back


def canonical(value: Any) -> Any:
    """A value both engines agree on: decimals without trailing zeros, timestamps as naive UTC."""
    if isinstance(value, Decimal):
        return value.normalize() if value != 0 else Decimal(0)
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.replace(tzinfo=None)
    return value


def canonical_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    return sorted((tuple(canonical(v) for v in row) for row in rows), key=repr)


def relation_columns(relation: Relation, all_columns: Sequence[str]) -> list[str]:
    """Columns to compare: snapshots' own bookkeeping (dbt_valid_from...) is the build time."""
    if relation.resource_type == "snapshot":
        return [c for c in all_columns if not c.startswith("dbt_")]
    return list(all_columns)


def duckdb_relation_rows(duckdb_path: Path, relation: Relation) -> tuple[list[str], list[tuple[Any, ...]]]:
    from roundtrip.core.duckdb_extensions import connect

    con = connect(duckdb_path, read_only=True)
    try:
        names = [r[0] for r in con.execute(f"describe {relation.sql_name}").fetchall()]
        columns = relation_columns(relation, names)
        rows = con.execute(f"select {', '.join(columns)} from {relation.sql_name}").fetchall()
        return columns, canonical_rows(rows)
    finally:
        con.close()


def postgres_relation_rows(postgres_url: str, relation: Relation) -> tuple[list[str], list[tuple[Any, ...]]]:
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        cursor = conn.execute(f"select * from {relation.sql_name} limit 0")
        names = [d.name for d in cursor.description or []]
        columns = relation_columns(relation, names)
        rows = conn.execute(f"select {', '.join(columns)} from {relation.sql_name}").fetchall()
        return columns, canonical_rows(rows)


@dataclass(frozen=True)
class Warehouse:
    """Where a test's models live: the DuckDB file, or the Postgres database when a URL is given."""

    duckdb_path: Path
    postgres_url: str | None = None

    @property
    def target(self) -> str:
        return "postgres" if self.postgres_url else "duckdb"

    def rows(self, relation: Relation) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and canonical rows (sorted) of a relation."""
        if self.postgres_url:
            return postgres_relation_rows(self.postgres_url, relation)
        return duckdb_relation_rows(self.duckdb_path, relation)

    def sync_raw_tables(self) -> None:
        """Postgres gets the raw tables of the DuckDB file (the tests load raw rows there)."""
        if self.postgres_url:
            copy_raw_tables_to_postgres(self.duckdb_path, self.postgres_url)


def query_duckdb(duckdb_path: Path, sql: str, read_only: bool = True) -> list[tuple[Any, ...]]:
    from roundtrip.core.duckdb_extensions import connect

    con = connect(duckdb_path, read_only=read_only)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()
