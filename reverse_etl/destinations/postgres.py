"""Postgres destination: COPY each batch into a staging table, then one set-based upsert.

Everything happens in one transaction: a failed run leaves the table as it was. The upsert only
touches rows that really changed (``IS DISTINCT FROM``), and ``RETURNING (xmax = 0)`` tells an
insert from an update, so the counts are exact.
"""

from __future__ import annotations

import io
import logging

import pyarrow as pa
import pyarrow.csv as pacsv

from reverse_etl.counts import SyncCounts
from reverse_etl.errors import SyncError, TransientSyncError
from reverse_etl.spec import SyncSpec

log = logging.getLogger(__name__)


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def pg_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_int8(arrow_type) or pa.types.is_int16(arrow_type):
        return "smallint"
    if pa.types.is_int32(arrow_type):
        return "integer"
    if pa.types.is_integer(arrow_type):
        return "bigint"
    if pa.types.is_floating(arrow_type):
        return "double precision"
    if pa.types.is_decimal(arrow_type):
        return f"numeric({arrow_type.precision}, {arrow_type.scale})"
    if pa.types.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz else "timestamp"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "text"
    return "jsonb"


class PostgresDestination:
    def __init__(self, spec: SyncSpec, conninfo: str) -> None:
        import psycopg

        self.spec = spec
        schema, _, table = spec.settings.target.partition(".")
        self.schema, self.table = schema, table
        self.relation = f"{quote(schema)}.{quote(table)}"
        try:
            self.conn = psycopg.connect(conninfo, autocommit=False)
        except psycopg.OperationalError as exc:
            raise TransientSyncError(f"sync {spec.name}: cannot connect to Postgres: {exc}") from exc
        self.columns: list[str] | None = None

    def _prepare(self, schema: pa.Schema) -> None:
        keys = self.spec.settings.primary_key
        missing = [k for k in keys if k not in schema.names]
        if missing:
            raise SyncError(f"sync {self.spec.name}: primary key column(s) {missing} not in model {self.spec.model}")
        columns = ", ".join(f"{quote(f.name)} {pg_type(f.type)}" for f in schema)
        pk = ", ".join(quote(k) for k in keys)
        with self.conn.cursor() as cur:
            cur.execute(f"create schema if not exists {quote(self.schema)}")
            cur.execute(f"create table if not exists {self.relation} ({columns}, primary key ({pk}))")
            cur.execute(f"create temp table _rt_stage (like {self.relation}) on commit drop")
        self.columns = schema.names

    def write(self, batch: pa.Table) -> SyncCounts:
        if self.columns is None:
            self._prepare(batch.schema)
        assert self.columns is not None
        keys = self.spec.settings.primary_key
        cols = ", ".join(quote(c) for c in self.columns)
        buffer = io.BytesIO()
        pacsv.write_csv(batch, buffer, pacsv.WriteOptions(include_header=False))
        others = [c for c in self.columns if c not in keys]
        set_clause = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in others)
        distinct = (
            f"({', '.join(f't.{quote(c)}' for c in others)}) is distinct from "
            f"({', '.join(f'excluded.{quote(c)}' for c in others)})"
        )
        action = f"do update set {set_clause} where {distinct}" if others else "do nothing"
        with self.conn.cursor() as cur:
            cur.execute("truncate _rt_stage")
            with cur.copy(f"copy _rt_stage ({cols}) from stdin (format csv)") as copy:
                copy.write(buffer.getvalue())
            cur.execute(
                f"""with upserted as (
                        insert into {self.relation} as t ({cols})
                        select {cols} from _rt_stage
                        on conflict ({", ".join(quote(k) for k in keys)}) {action}
                        returning (xmax = 0) as is_insert
                    )
                    select count(*) filter (where is_insert), count(*) filter (where not is_insert) from upserted"""
            )
            row = cur.fetchone()
        inserted, updated = (int(row[0]), int(row[1])) if row else (0, 0)
        return SyncCounts(inserted=inserted, updated=updated, unchanged=batch.num_rows - inserted - updated)

    def finish(self) -> SyncCounts:
        self.conn.commit()
        return SyncCounts()

    def abort(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        self.conn.close()
