"""The embedded default warehouse: a DuckDB file under ``data/``."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from loaders.warehouse import sql
from loaders.warehouse.base import Batches, ParquetExport, WriteResult
from roundtrip.core.sql import quote

log = logging.getLogger(__name__)
q = quote


class DuckDBWarehouse:
    name = "duckdb"

    def __init__(self, path: Path, wait: float = 0) -> None:
        from roundtrip.core.duckdb_extensions import connect

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.con = connect(path, wait=wait)
        self._in_transaction = False

    # ------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._in_transaction:  # nested: the outer one commits
            yield
            return
        self.con.execute("begin transaction")
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self.con.execute("rollback")
            raise
        else:
            self.con.execute("commit")
        finally:
            self._in_transaction = False

    def _fetchone(self, query: str) -> tuple | None:  # type: ignore[type-arg]
        return self.con.execute(query).fetchone()

    @staticmethod
    def _relation(schema: str, table: str) -> str:
        return f"{q(schema)}.{q(table)}"

    def _exists(self, schema: str, table: str) -> bool:
        row = self.con.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchone()
        return bool(row and row[0])

    def _columns(self, relation: str) -> list[str]:
        return [row[0] for row in self.con.execute(f"select column_name from (describe {relation})").fetchall()]

    def _stage(self, batches: Batches) -> str | None:
        """Every batch in one temp table (dropped at the end of the write); None when there is none."""
        name = f"_stage_{uuid.uuid4().hex[:12]}"
        created = False
        for batch in batches:
            self.con.register("_incoming", batch)
            if created:
                known = set(self._columns(name))
                for column, type_ in self.con.execute(
                    "select column_name, column_type from (describe _incoming)"
                ).fetchall():
                    if column not in known:  # a later file may bring a new column
                        self.con.execute(f"alter table {name} add column {q(column)} {type_}")
                self.con.execute(f"insert into {name} by name select * from _incoming")
            else:
                self.con.execute(f"create temp table {name} as select * from _incoming")
                created = True
            self.con.unregister("_incoming")
        return name if created else None

    def _ensure_table(self, schema: str, table: str, stage: str) -> str:
        """Create the target like the stage, or add the stage's new columns (additive evolution only)."""
        self.con.execute(f"create schema if not exists {q(schema)}")
        relation = self._relation(schema, table)
        if not self._exists(schema, table):
            self.con.execute(f"create table {relation} as select * from {stage} limit 0")
            return relation
        existing = dict(self.con.execute(f"select column_name, column_type from (describe {relation})").fetchall())
        for name, type_ in self.con.execute(f"select column_name, column_type from (describe {stage})").fetchall():
            if name not in existing:
                log.info("adding column %s %s to %s", name, type_, relation)
                self.con.execute(f"alter table {relation} add column {q(name)} {type_}")
            elif existing[name] != type_:
                self._check_fits(relation, stage, name, type_, existing[name])
        return relation

    def _check_fits(self, relation: str, stage: str, column: str, source_type: str, target_type: str) -> None:
        """A source column whose type changed (``integer`` to ``numeric(10,2)``, to ``text``): its
        values must go into the warehouse column unchanged, else the load stops naming it (a
        cast would round 10.75 to 11, or fail deep in the merge naming nothing)."""
        col = q(column)
        row = self.con.execute(
            f"select {col}::varchar from {stage} where {col} is not null and "
            f"try_cast(try_cast({col} as {target_type}) as {source_type}) is distinct from {col} limit 1"
        ).fetchone()
        if row is not None:
            raise sql.type_change_error(relation, column, col, target_type, source_type, row[0])

    # ------------------------------------------------------------ writes

    def merge(self, schema: str, table: str, batches: Batches, keys: list[str]) -> WriteResult:
        with self.transaction():
            if self._empty(schema, table):
                return self._fill(schema, table, batches, keys)
            stage = self._stage(batches)
            if stage is None:
                return WriteResult()
            sql.check_staged_keys(self._fetchone, stage, keys, f"{schema}.{table}", q)
            relation = self._ensure_table(schema, table, stage)
            columns = self._columns(stage)
            compared = f"{stage}_compared"
            self.con.execute(sql.compare_statement(relation, stage, columns, keys, q, compared))
            counts = self._fetchone(sql.compared_counts_query(compared))
            inserted, updated, unchanged = (int(c) for c in counts or (0, 0, 0))
            if updated and self._replaceable(schema, table, relation, columns):
                self.con.execute(sql.delete_changed_statement(relation, compared, keys, q))
                self.con.execute(sql.insert_new_and_changed_statement(relation, stage, compared, columns, keys, q))
            elif inserted or updated:
                self.con.execute(sql.merge_statement(relation, stage, columns, keys, q))
            self.con.execute(f"drop table {compared}")
            self.con.execute(f"drop table {stage}")
        return WriteResult(inserted=inserted, updated=updated, unchanged=unchanged)

    def _replaceable(self, schema: str, table: str, relation: str, columns: list[str]) -> bool:
        """A changed row may be deleted and inserted again instead of updated in place when the
        staged row is the whole row (the table has no column of its own to keep) and no index
        or constraint sees the key twice in one transaction. DuckDB then writes the new rows
        and a deletion mark, where an update rewrites the updated columns of every row group a
        changed row is in (at the checkpoint): the same rows, for less work."""
        if set(self._columns(relation)) - set(columns):
            return False
        row = self.con.execute(
            "select (select count(*) from duckdb_indexes() where schema_name = $1 and table_name = $2)"
            " + (select count(*) from duckdb_constraints() where schema_name = $1 and table_name = $2)",
            [schema, table],
        ).fetchone()
        return row == (0,)

    def _empty(self, schema: str, table: str) -> bool:
        if not self._exists(schema, table):
            return True
        return self._fetchone(f"select exists (select 1 from {self._relation(schema, table)})") == (False,)

    def _fill(self, schema: str, table: str, batches: Batches, keys: list[str]) -> WriteResult:
        """A merge into an empty table inserts every row: straight from the batches, no staging
        copy and no comparison. The keys are checked in the table itself; a NULL or repeated one
        raises, and the open transaction takes the rows back."""
        inserted = self.append(schema, table, batches)
        if self._exists(schema, table):
            sql.check_staged_keys(self._fetchone, self._relation(schema, table), keys, f"{schema}.{table}", q)
        return WriteResult(inserted=inserted)

    def delete_missing(self, schema: str, table: str, keys: list[str], present: Batches) -> int:
        if not self._exists(schema, table):
            return 0
        with self.transaction():
            stage = self._stage(present)
            if stage is None:
                return 0
            predicate = sql.missing_keys_predicate("t", stage, keys, q)
            row = self._fetchone(f"delete from {self._relation(schema, table)} t where {predicate}")
            self.con.execute(f"drop table {stage}")
        return int(row[0]) if row else 0

    def append(self, schema: str, table: str, batches: Batches) -> int:
        """Straight from each Arrow batch (no staging copy: nothing to compare before an append)."""
        added = 0
        with self.transaction():
            for batch in batches:
                view = f"_incoming_{uuid.uuid4().hex[:12]}"
                self.con.register(view, batch)
                try:
                    relation = self._ensure_table(schema, table, view)
                    row = self._fetchone(f"insert into {relation} by name select * from {view}")
                    added += int(row[0]) if row else 0
                finally:
                    self.con.unregister(view)
        return added

    def ensure_table(self, schema: str, table: str, columns: pa.Schema) -> None:
        view = f"_columns_{uuid.uuid4().hex[:12]}"
        self.con.register(view, columns.empty_table())
        try:
            self._ensure_table(schema, table, view)
        finally:
            self.con.unregister(view)

    def delete_where(
        self, schema: str, table: str, column: str, values: list[str], scope: dict[str, str] | None = None
    ) -> int:
        if not values or not self._exists(schema, table):
            return 0
        scoped = "".join(f" and {q(c)} = ?" for c in scope or {})
        row = self.con.execute(
            f"delete from {self._relation(schema, table)} where {q(column)} in (select unnest(?)){scoped}",
            [values, *(scope or {}).values()],
        ).fetchone()
        return int(row[0]) if row else 0

    def update_where(
        self, schema: str, table: str, column: str, old: str, new: str, scope: dict[str, str] | None = None
    ) -> int:
        if not self._exists(schema, table):
            return 0
        scoped = "".join(f" and {q(c)} = ?" for c in scope or {})
        row = self.con.execute(
            f"update {self._relation(schema, table)} set {q(column)} = ? where {q(column)} = ?{scoped}",
            [new, old, *(scope or {}).values()],
        ).fetchone()
        return int(row[0]) if row else 0

    def replace(self, schema: str, table: str, batches: Batches) -> int:
        with self.transaction():
            stage = self._stage(batches)
            relation = self._relation(schema, table)
            if stage is None:  # nothing at all, not even a schema: keep the table, empty it
                if self._exists(schema, table):
                    self.con.execute(f"delete from {relation}")
                return 0
            self.con.execute(f"create schema if not exists {q(schema)}")
            self.con.execute(f"create or replace table {relation} as select * from {stage}")
            self.con.execute(f"drop table {stage}")
            row = self._fetchone(f"select count(*) from {relation}")
        return int(row[0]) if row else 0

    def read_table(self, schema: str, table: str) -> pa.Table | None:
        if not self._exists(schema, table):
            return None
        return self.con.execute(f"select * from {self._relation(schema, table)}").to_arrow_table()

    def export_parquet(self, export: ParquetExport) -> tuple[str, int]:
        from loaders.warehouse.parquet_copy import copy_to_parquet

        return copy_to_parquet(self.con, self._relation(export.schema, export.table), {}, export)

    def close(self) -> None:
        self.con.close()
