"""PostgreSQL as the warehouse (dbt's ``postgres`` target): COPY into a temp table, then MERGE.

Needs PostgreSQL 15+ (MERGE). Every write runs inside a real transaction; nested
``transaction()`` calls become savepoints of the outer one.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from loaders.errors import LoaderError
from loaders.warehouse import sql
from loaders.warehouse.base import Batches, ParquetExport, WriteResult
from roundtrip.core.sql import postgres_type, quote

log = logging.getLogger(__name__)
q = quote


def pg_type(type_: pa.DataType, column: str) -> str:
    found = postgres_type(type_)
    if found is None:
        raise LoaderError(f"column {column!r}: no PostgreSQL type for Arrow {type_}")
    return found


class PostgresWarehouse:
    name = "postgres"

    def __init__(self, conninfo: str) -> None:
        import psycopg

        self.conninfo = conninfo  # the export reads through DuckDB's postgres extension with it
        try:
            self.conn = psycopg.connect(conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            raise LoaderError(f"cannot connect to the Postgres warehouse: {exc}") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.conn.transaction():
            yield

    def _fetchone(self, query: str, params: Any = None) -> tuple | None:  # type: ignore[type-arg]
        return self.conn.execute(query, params).fetchone()  # type: ignore[arg-type]

    @staticmethod
    def _relation(schema: str, table: str) -> str:
        return f"{q(schema)}.{q(table)}"

    def _columns(self, schema: str, table: str) -> dict[str, str]:
        rows = self.conn.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = %s and table_name = %s order by ordinal_position",
            [schema, table],
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def _stage(self, batches: Batches) -> tuple[str, pa.Schema] | None:
        """COPY every batch into one temp table (dropped at commit); None when there is none."""
        name = f"_stage_{uuid.uuid4().hex[:12]}"
        schema: pa.Schema | None = None
        with self.conn.transaction():
            for batch in batches:
                if schema is None:
                    schema = batch.schema
                    columns = ", ".join(f"{q(f.name)} {pg_type(f.type, f.name)}" for f in schema)
                    self.conn.execute(f"create temp table {name} ({columns}) on commit drop")
                elif batch.schema.names != schema.names:
                    raise LoaderError(f"batches disagree on columns: {schema.names} then {batch.schema.names}")
                column_list = ", ".join(q(n) for n in schema.names)
                with self.conn.cursor().copy(f"copy {name} ({column_list}) from stdin") as copy:
                    for row in zip(*(c.to_pylist() for c in batch.columns)):
                        copy.write_row(row)
        return None if schema is None else (name, schema)

    def _ensure_table(self, schema: str, table: str, columns: pa.Schema, keys: list[str] | None = None) -> str:
        """Create the target, or add the new columns (additive evolution only)."""
        relation = self._relation(schema, table)
        self.conn.execute(f"create schema if not exists {q(schema)}")
        existing = self._columns(schema, table)
        if not existing:
            definitions = [f"{q(f.name)} {pg_type(f.type, f.name)}" for f in columns]
            if keys:
                definitions.append(f"primary key ({', '.join(q(k) for k in keys)})")
            self.conn.execute(f"create table {relation} ({', '.join(definitions)})")
            return relation
        for field in columns:
            if field.name not in existing:
                log.info("adding column %s to %s", field.name, relation)
                self.conn.execute(
                    f"alter table {relation} add column {q(field.name)} {pg_type(field.type, field.name)}"
                )
        return relation

    # ------------------------------------------------------------ writes

    def _types(self, relation: str) -> dict[str, str]:
        rows = self.conn.execute(
            "select attname, format_type(atttypid, atttypmod) from pg_attribute "
            "where attrelid = %s::regclass and attnum > 0 and not attisdropped",
            [relation],
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def _check_fits(self, relation: str, stage: str) -> None:
        """A source column whose type changed (``integer`` to ``numeric(10,2)``, to ``text``): its
        values must go into the warehouse column unchanged, else the load stops naming it (a
        cast would round 10.75 to 11, or fail in the merge naming nothing)."""
        target = self._types(relation)
        for column, source_type in self._types(stage).items():
            target_type = target.get(column)
            if target_type is None or target_type == source_type:
                continue
            col = q(column)
            try:
                with self.conn.transaction():  # a savepoint: a failed cast leaves the load going
                    row = self.conn.execute(
                        f"select {col}::text from {stage} where {col} is not null "
                        f"and {col}::{target_type}::{source_type} is distinct from {col} limit 1"
                    ).fetchone()
            except Exception:  # a value the warehouse type cannot read at all
                row = ("(one that does not convert)",)
            if row is not None:
                raise sql.type_change_error(relation, column, col, target_type, source_type, row[0])

    def merge(self, schema: str, table: str, batches: Batches, keys: list[str]) -> WriteResult:
        with self.transaction():
            staged = self._stage(batches)
            if staged is None:
                return WriteResult()
            stage, columns = staged
            sql.check_staged_keys(self._fetchone, stage, keys, f"{schema}.{table}", q)
            relation = self._ensure_table(schema, table, columns, keys)
            self._check_fits(relation, stage)
            counts = self._fetchone(sql.merge_counts_query(relation, stage, columns.names, keys, q))
            inserted, updated, unchanged = (int(c) for c in counts or (0, 0, 0))
            if inserted or updated:
                self.conn.execute(sql.merge_statement(relation, stage, columns.names, keys, q))
            self.conn.execute(f"drop table {stage}")
        return WriteResult(inserted=inserted, updated=updated, unchanged=unchanged)

    def delete_missing(self, schema: str, table: str, keys: list[str], present: Batches) -> int:
        if not self._columns(schema, table):
            return 0
        with self.transaction():
            staged = self._stage(present)
            if staged is None:
                return 0
            predicate = sql.missing_keys_predicate("t", staged[0], keys, q)
            deleted = self.conn.execute(f"delete from {self._relation(schema, table)} t where {predicate}").rowcount
            self.conn.execute(f"drop table {staged[0]}")
        return deleted

    def append(self, schema: str, table: str, batches: Batches) -> int:
        with self.transaction():
            staged = self._stage(batches)
            if staged is None:
                return 0
            stage, columns = staged
            relation = self._ensure_table(schema, table, columns)
            self._check_fits(relation, stage)
            column_list = ", ".join(q(n) for n in columns.names)
            added = self.conn.execute(
                f"insert into {relation} ({column_list}) select {column_list} from {stage}"
            ).rowcount
            self.conn.execute(f"drop table {stage}")
        return added

    def ensure_table(self, schema: str, table: str, columns: pa.Schema) -> None:
        with self.transaction():
            self._ensure_table(schema, table, columns)

    def delete_where(
        self, schema: str, table: str, column: str, values: list[str], scope: dict[str, str] | None = None
    ) -> int:
        if not values or not self._columns(schema, table):
            return 0
        scoped = "".join(f" and {q(c)} = %s" for c in scope or {})
        return self.conn.execute(
            f"delete from {self._relation(schema, table)} where {q(column)} = any(%s){scoped}",
            [values, *(scope or {}).values()],
        ).rowcount

    def update_where(
        self, schema: str, table: str, column: str, old: str, new: str, scope: dict[str, str] | None = None
    ) -> int:
        if not self._columns(schema, table):
            return 0
        scoped = "".join(f" and {q(c)} = %s" for c in scope or {})
        return self.conn.execute(
            f"update {self._relation(schema, table)} set {q(column)} = %s where {q(column)} = %s{scoped}",
            [new, old, *(scope or {}).values()],
        ).rowcount

    def replace(self, schema: str, table: str, batches: Batches) -> int:
        """TRUNCATE + INSERT in one transaction: readers see the old rows until the commit, and
        views that depend on the table (dbt staging) survive, unlike a drop and rename."""
        with self.transaction():
            staged = self._stage(batches)
            relation = self._relation(schema, table)
            if staged is None:
                if self._columns(schema, table):
                    self.conn.execute(f"truncate {relation}")
                return 0
            stage, columns = staged
            relation = self._ensure_table(schema, table, columns)
            self._check_fits(relation, stage)
            self.conn.execute(f"truncate {relation}")
            column_list = ", ".join(q(n) for n in columns.names)
            added = self.conn.execute(
                f"insert into {relation} ({column_list}) select {column_list} from {stage}"
            ).rowcount
            self.conn.execute(f"drop table {stage}")
        return added

    def read_table(self, schema: str, table: str) -> pa.Table | None:
        if not self._columns(schema, table):
            return None
        cursor = self.conn.execute(f"select * from {self._relation(schema, table)}")
        names = [d.name for d in cursor.description or []]
        return pa.Table.from_pylist([dict(zip(names, row)) for row in cursor.fetchall()])

    def export_parquet(self, export: ParquetExport) -> tuple[str, int]:
        """Through DuckDB's postgres extension (binary COPY out of PostgreSQL), written by DuckDB."""
        from loaders.warehouse.parquet_copy import copy_to_parquet
        from roundtrip.core.duckdb_extensions import connect

        con = connect(extensions=("postgres",))
        try:
            source = "postgres_scan($conninfo, $schema, $table)"
            params = {"conninfo": self.conninfo, "schema": export.schema, "table": export.table}
            return copy_to_parquet(con, source, params, export)
        finally:
            con.close()

    def close(self) -> None:
        self.conn.close()
