"""The embedded default warehouse: a DuckDB file under ``data/``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from loaders.errors import LoaderError
from loaders.warehouse.base import STATE_SCHEMA, WriteResult, quote

log = logging.getLogger(__name__)
LOADED_AT = "_loaded_at"


class DuckDBWarehouse:
    name = "duckdb"

    def __init__(self, path: Path) -> None:
        from roundtrip.duckdb_extensions import connect

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.con = connect(path)
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

    def _relation(self, schema: str, table: str) -> str:
        return f"{quote(schema)}.{quote(table)}"

    def _exists(self, schema: str, table: str) -> bool:
        row = self.con.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchone()
        return bool(row and row[0])

    def _columns(self, schema: str, table: str) -> list[str]:
        rows = self.con.execute(
            "select column_name from information_schema.columns where table_schema = ? and table_name = ? "
            "order by ordinal_position",
            [schema, table],
        ).fetchall()
        return [r[0] for r in rows]

    def _stage(self, data: pa.Table, name: str = "_stage") -> str:
        self.con.register("_incoming", data)
        self.con.execute(f"create or replace temp table {name} as select * from _incoming")
        self.con.unregister("_incoming")
        return name

    def _ensure_table(self, schema: str, table: str, stage: str, keys: list[str] | None = None) -> None:
        self.con.execute(f"create schema if not exists {quote(schema)}")
        relation = self._relation(schema, table)
        if not self._exists(schema, table):
            self.con.execute(f"create table {relation} as select * from {stage} limit 0")
            return
        existing = set(self._columns(schema, table))
        for name, type_ in self.con.execute(f"select column_name, column_type from (describe {stage})").fetchall():
            if name not in existing:  # additive schema evolution only
                log.info("adding column %s %s to %s", name, type_, relation)
                self.con.execute(f"alter table {relation} add column {quote(name)} {type_}")

    # ------------------------------------------------------------ writes

    def merge(self, schema: str, table: str, data: pa.Table, keys: list[str]) -> WriteResult:
        with self.transaction():
            stage = self._stage(data)
            self._reject_duplicate_keys(stage, keys, f"{schema}.{table}")
            self._ensure_table(schema, table, stage, keys)
            relation = self._relation(schema, table)
            columns = [c for c in self._columns(schema, table) if c in data.column_names]
            on = " and ".join(f"t.{quote(k)} = s.{quote(k)}" for k in keys)
            compared = [c for c in columns if c not in keys and c != LOADED_AT]
            changed = " or ".join(f"t.{quote(c)} is distinct from s.{quote(c)}" for c in compared) or "false"
            counts = self.con.execute(
                f"""select
                        count(*) filter (where not matched),
                        count(*) filter (where matched and changed),
                        count(*) filter (where matched and not changed)
                    from (
                        select t.{quote(keys[0])} is not null as matched, {changed} as changed
                        from {stage} s left join {relation} t on {on}
                    )"""
            ).fetchone()
            assert counts is not None
            inserted, updated, unchanged = (int(c) for c in counts)
            if inserted or updated:
                set_clause = ", ".join(f"{quote(c)} = s.{quote(c)}" for c in columns if c not in keys)
                col_list = ", ".join(quote(c) for c in columns)
                self.con.execute(
                    f"""merge into {relation} t using {stage} s on ({on})
                        when matched and ({changed}) then update set {set_clause}
                        when not matched then insert ({col_list}) values ({", ".join(f"s.{quote(c)}" for c in columns)})"""
                )
            self.con.execute(f"drop table {stage}")
        return WriteResult(inserted=inserted, updated=updated, unchanged=unchanged)

    def _reject_duplicate_keys(self, stage: str, keys: list[str], where: str) -> None:
        key_list = ", ".join(quote(k) for k in keys)
        null_key = " or ".join(f"{quote(k)} is null" for k in keys)
        nulls = self.con.execute(f"select count(*) from {stage} where {null_key}").fetchone()
        if nulls and nulls[0]:
            raise LoaderError(f"{where}: {nulls[0]} row(s) have a NULL in the key {keys}")
        dup = self.con.execute(
            f"select {key_list}, count(*) from {stage} group by all having count(*) > 1 limit 1"
        ).fetchone()
        if dup:
            raise LoaderError(f"{where}: key {dict(zip(keys, dup[:-1]))} appears {dup[-1]} times in one batch")

    def delete_missing(self, schema: str, table: str, keys: list[str], present: pa.Table) -> int:
        if not self._exists(schema, table):
            return 0
        with self.transaction():
            stage = self._stage(present.select(keys), "_present_keys")
            on = " and ".join(f"t.{quote(k)} = p.{quote(k)}" for k in keys)
            row = self.con.execute(
                f"""delete from {self._relation(schema, table)} t
                    where not exists (select 1 from {stage} p where {on})"""
            ).fetchone()
            self.con.execute(f"drop table {stage}")
        return int(row[0]) if row else 0

    def append(self, schema: str, table: str, data: pa.Table) -> int:
        with self.transaction():
            stage = self._stage(data)
            self._ensure_table(schema, table, stage)
            cols = ", ".join(quote(c) for c in data.column_names)
            self.con.execute(f"insert into {self._relation(schema, table)} ({cols}) select {cols} from {stage}")
            self.con.execute(f"drop table {stage}")
        return data.num_rows

    def delete_where(self, schema: str, table: str, column: str, values: list[str]) -> int:
        if not values or not self._exists(schema, table):
            return 0
        row = self.con.execute(
            f"delete from {self._relation(schema, table)} where {quote(column)} in (select unnest(?))", [values]
        ).fetchone()
        return int(row[0]) if row else 0

    def replace(self, schema: str, table: str, data: pa.Table) -> int:
        with self.transaction():
            stage = self._stage(data)
            self.con.execute(f"create schema if not exists {quote(schema)}")
            self.con.execute(f"create or replace table {self._relation(schema, table)} as select * from {stage}")
            self.con.execute(f"drop table {stage}")
        return data.num_rows

    # ------------------------------------------------------------ state

    def _ensure_state(self) -> None:
        self.con.execute(f"create schema if not exists {STATE_SCHEMA}")
        self.con.execute(
            f"create table if not exists {STATE_SCHEMA}.loader_state "
            "(key varchar primary key, value varchar, updated_at timestamp default current_timestamp)"
        )

    def get_state(self, key: str) -> str | None:
        self._ensure_state()
        row = self.con.execute(f"select value from {STATE_SCHEMA}.loader_state where key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, key: str, value: str) -> None:
        self._ensure_state()
        self.con.execute(
            f"insert into {STATE_SCHEMA}.loader_state (key, value) values (?, ?) "
            "on conflict (key) do update set value = excluded.value, updated_at = now()",
            [key, value],
        )

    def row_count(self, schema: str, table: str) -> int:
        if not self._exists(schema, table):
            return 0
        row = self.con.execute(f"select count(*) from {self._relation(schema, table)}").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.con.close()
