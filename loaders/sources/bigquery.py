"""BigQuery tables of any project as Arrow batches for the warehouse (``python -m loaders bigquery``).

- **What is read**: the table's metadata first (REST ``tables.get``): its type, columns and row
  count. Tables and snapshots are read through the Storage Read API
  (``roundtrip.core.bigquery_read``, the reader reverse_etl uses too), selected columns only,
  the row filter applied by BigQuery; one record batch at a time. A view (or materialized view,
  external table) cannot be read that way: a query job selects the same columns and rows, and
  its result table is read through the Storage Read API in turn.
- **Incremental**: a cursor column (TIMESTAMP, DATETIME, DATE or INT64) restricts the read to
  ``cursor > watermark - lookback``; the largest cursor value read becomes the next watermark.
- **Estimate**: from table metadata when every row is read, else a ``COUNT(*)`` with the same
  restriction (a small query billed to ``ROUNDTRIP_BQ_PROJECT``).
- **Types**: as the Storage Read API gives them (NUMERIC decimal(38, 9), TIMESTAMP in UTC
  microseconds, DATETIME without zone, DATE, TIME, BOOL, BYTES), JSON as the warehouse's JSON
  type, REPEATED and RECORD (and RANGE) columns as JSON text; BIGNUMERIC stays a 76-digit
  decimal where the warehouse has one (Postgres, BigQuery) and is its exact decimal text on
  DuckDB, whose decimals stop at 38 digits. Column names are sanitized as the file loader does.

Every problem the user can fix is a ``LoaderError`` naming the table and the loaders.yml
setting (or the ``ROUNDTRIP_BQ_*`` setting) at fault, raised before any row is staged.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from loaders.config import BigQueryTableConfig
from loaders.errors import LoaderError
from loaders.sources.files import sanitize, sanitized_names
from roundtrip.core.bigquery import BigQueryConnection
from roundtrip.core.bigquery_read import BigQueryReadError, TableId, open_read, read_error
from roundtrip.core.sql import quote_backtick as bq

log = logging.getLogger(__name__)

Batch = tuple[pa.Table, object | None]  # rows, the largest cursor value among them
CURSOR_TYPES = {"TIMESTAMP", "DATETIME", "DATE", "INT64", "INTEGER"}
STORAGE_READABLE = {"TABLE", "SNAPSHOT"}  # other types (VIEW, MATERIALIZED_VIEW, EXTERNAL) go through a query
NESTED_TYPES = {"RECORD", "STRUCT", "RANGE"}
_DURATION = re.compile(r"\s*(\d+)\s*([dhms])\s*")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
QUERY_RESULT_HOURS = 24


@dataclass(frozen=True)
class Column:
    source: str  # BigQuery's name
    target: str  # sanitized
    type: str  # BigQuery's (REST) type: INT64 or INTEGER, NUMERIC, RECORD, JSON, ...
    repeated: bool

    @property
    def as_json_text(self) -> bool:
        return self.repeated or self.type in NESTED_TYPES


@dataclass(frozen=True)
class TablePlan:
    """What one configured table is, checked against its metadata before anything is read."""

    where: str  # "bigquery.<source> <project.dataset.table>": the start of every message
    table: TableId
    table_type: str  # TABLE, VIEW, ...
    location: str | None  # where a query job on it must run
    columns: list[Column]
    keys: list[str]  # target names
    cursor: Column | None
    lookback: timedelta | int | None
    metadata_rows: int | None  # tables.get's numRows (None for views)
    filter: str | None
    target_table: str

    @property
    def relation(self) -> str:
        return ".".join(bq(part) for part in (self.table.project, self.table.dataset, self.table.table))


def describe(rest: Any, source: str, config: BigQueryTableConfig, billing: str) -> TablePlan:
    """The table's metadata, with every setting of ``config`` checked against it."""
    table = TableId.parse(config.name)
    where = f"bigquery.{source} {table}"
    try:
        meta = rest.get_table(str(table))
    except Exception as exc:
        raise _loader_error(exc, where, table, billing, "name") from None
    fields = {f.name.lower(): f for f in meta.schema}  # BigQuery's names are case-insensitive

    def field(name: str, setting: str) -> Any:
        found = fields.get(name.lower())
        if found is None:
            raise LoaderError(
                f"{where}: no column {name!r} ({setting} in loaders.yml)",
                hint=f"its columns: {', '.join(f.name for f in meta.schema)}",
            )
        return found

    wanted = [field(n, "columns") for n in config.columns] if config.columns else list(meta.schema)
    keys = [field(n, "primary_key") for n in config.primary_key]
    cursor = field(config.cursor, "cursor") if config.cursor else None
    for extra in [*keys, *([cursor] if cursor else [])]:  # the keys and the cursor are always read
        if extra.name not in {f.name for f in wanted}:
            wanted.append(extra)
    names = sanitized_names([f.name for f in wanted], where)
    columns = [Column(f.name, n, f.field_type.upper(), f.mode == "REPEATED") for f, n in zip(wanted, names)]
    by_source = {c.source: c for c in columns}
    cursor_column = by_source[cursor.name] if cursor else None
    if cursor_column and (cursor_column.type not in CURSOR_TYPES or cursor_column.repeated):
        raise LoaderError(
            f"{where}: cursor {cursor_column.source!r} is {cursor_column.type}; "
            "a cursor is TIMESTAMP, DATETIME, DATE or INT64 (cursor in loaders.yml)"
        )
    for key in keys:
        if by_source[key.name].as_json_text or by_source[key.name].type in ("JSON", "FLOAT64", "FLOAT"):
            raise LoaderError(f"{where}: key {key.name!r} is {key.field_type}, which cannot be a MERGE key")
    return TablePlan(
        where=where,
        table=table,
        table_type=(meta.table_type or "TABLE").upper(),
        location=getattr(meta, "location", None),
        columns=columns,
        keys=[by_source[k.name].target for k in keys],
        cursor=cursor_column,
        lookback=_lookback(config.lookback, cursor_column, where),
        metadata_rows=meta.num_rows,
        filter=config.filter.strip() if config.filter and config.filter.strip() else None,
        target_table=config.target_table or sanitize(table.table),
    )


def _lookback(value: str | int | None, cursor: Column | None, where: str) -> timedelta | int | None:
    if value in (None, 0, "0", ""):
        return None
    if cursor is None:
        raise LoaderError(f"{where}: lookback needs a cursor (lookback in loaders.yml)")
    if cursor.type in ("INT64", "INTEGER"):
        if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            return int(value)
        raise LoaderError(f"{where}: lookback {value!r} is not a number of cursor units (INT64 cursor)")
    parts = _DURATION.findall(str(value))
    if isinstance(value, int) or not parts or "".join(_DURATION.sub("", str(value))):
        raise LoaderError(f"{where}: lookback {value!r} is not a duration such as 2h, 30m, 1d12h or 90s")
    return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[unit] for n, unit in parts))


# ------------------------------------------------------------------ incremental restriction


def restriction(plan: TablePlan, since: object | None) -> str | None:
    """The row filter and ``cursor > watermark - lookback``, as one BigQuery predicate."""
    parts = [f"({plan.filter})"] if plan.filter else []
    if plan.cursor is not None and since is not None:
        parts.append(f"{bq(plan.cursor.source)} > {_literal(plan.cursor.type, _behind(since, plan.lookback))}")
    return " and ".join(parts) or None


def _behind(since: object, lookback: timedelta | int | None) -> object:
    if lookback is None:
        return since
    try:
        if isinstance(lookback, int):
            return int(since) - lookback  # type: ignore[call-overload]
        if isinstance(since, datetime):
            return since - lookback
        if isinstance(since, date):
            return since - timedelta(days=math.ceil(lookback.total_seconds() / 86400))
    except OverflowError:  # before year 1: everything
        return datetime.min.replace(tzinfo=UTC) if isinstance(since, datetime) else date.min
    return since


def _literal(kind: str, value: object) -> str:
    if kind == "TIMESTAMP" and isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return f"timestamp '{aware.astimezone(UTC).isoformat(sep=' ')}'"
    if kind == "DATETIME" and isinstance(value, datetime):
        return f"datetime '{value.replace(tzinfo=None).isoformat(sep=' ')}'"
    if kind == "DATE" and isinstance(value, date):
        return f"date '{value.isoformat()}'"
    if kind in ("INT64", "INTEGER") and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise LoaderError(
        f"the stored watermark {value!r} does not fit a {kind} cursor (the cursor column changed type?)",
        hint="run with --full-refresh to read everything again",
    )


# ------------------------------------------------------------------ estimate


def estimate(rest: Any, plan: TablePlan, where_sql: str | None, billing: str) -> tuple[int, str]:
    """Rows the read will return: table metadata when it reads every row, else ``COUNT(*)``."""
    if where_sql is None and plan.metadata_rows is not None and plan.table_type in STORAGE_READABLE:
        return int(plan.metadata_rows), "table metadata"
    statement = f"select count(*) from {plan.relation}" + (f" where {where_sql}" if where_sql else "")
    try:
        row = next(iter(rest.query(statement, location=plan.location).result()))
    except Exception as exc:
        raise _loader_error(exc, plan.where, plan.table, billing, "filter" if plan.filter else "name") from None
    return int(row[0]), "count(*)"


# ------------------------------------------------------------------ read


def read_batches(
    connection: BigQueryConnection,
    rest: Any,
    plan: TablePlan,
    where_sql: str | None,
    target: str,
    query_dataset: str | None = None,
) -> Iterator[Batch]:
    """The rows ``where_sql`` keeps, converted for the ``target`` warehouse, a batch at a time;
    at least one (possibly empty) batch, so the target gets its columns."""
    names = [c.source for c in plan.columns]
    if plan.table_type in STORAGE_READABLE:
        batches, schema = _storage_read(connection, plan, plan.table, names, where_sql, connection.project)
        yield from _converted(batches, schema, plan, target)
        return
    result = _run_query(rest, plan, names, where_sql, connection.project, query_dataset)
    try:
        batches, schema = _storage_read(connection, plan, result, names, None, connection.project)
        yield from _converted(batches, schema, plan, target)
    finally:
        if query_dataset:
            rest.delete_table(str(result), not_found_ok=True)


def _storage_read(
    connection: BigQueryConnection,
    plan: TablePlan,
    table: TableId,
    names: list[str],
    where_sql: str | None,
    billing: str,
) -> tuple[Iterator[pa.RecordBatch], pa.Schema]:
    try:
        session = open_read(connection, table, names, where_sql)
    except BigQueryReadError as exc:
        raise _from_read_error(exc, plan, billing) from None

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from session.batches()
        except BigQueryReadError as exc:
            raise _from_read_error(exc, plan, billing) from None

    return batches(), session.schema


def _run_query(
    rest: Any, plan: TablePlan, names: list[str], where_sql: str | None, billing: str, query_dataset: str | None
) -> TableId:
    """A view's rows through a query job; its result table: BigQuery's anonymous one, or with
    ``query_dataset`` a table created there that expires in a day (dropped after the read)."""
    statement = f"select {', '.join(bq(n) for n in names)} from {plan.relation}"
    statement += f" where {where_sql}" if where_sql else ""
    result: TableId | None = None
    if query_dataset:
        stamp = datetime.now(UTC)
        project, _, dataset = query_dataset.rpartition(".")
        name = f"_read_{sanitize(plan.table.table)}_{stamp:%Y%m%d%H%M%S}_{uuid.uuid4().hex[:8]}"
        result = TableId(project or billing, dataset, name)
        statement = (
            f"create table {bq(result.project)}.{bq(result.dataset)}.{bq(result.table)} options "
            f"(expiration_timestamp = timestamp_add(current_timestamp(), interval {QUERY_RESULT_HOURS} hour)) "
            f"as {statement}"
        )
    log.info("%s is a %s: reading it through a query job", plan.table, plan.table_type.lower())
    try:
        job = rest.query(statement, location=plan.location)
        job.result()
    except Exception as exc:
        raise _loader_error(exc, plan.where, plan.table, billing, "filter" if plan.filter else "name") from None
    if result is not None:
        return result
    destination = job.destination
    return TableId(destination.project, destination.dataset_id, destination.table_id)


def _converted(batches: Iterator[pa.RecordBatch], schema: pa.Schema, plan: TablePlan, target: str) -> Iterator[Batch]:
    yielded = False
    for batch in batches:
        table = convert(batch, plan, target)
        top = pc.max(table.column(plan.cursor.target)).as_py() if plan.cursor else None
        yield table, top
        yielded = True
    if not yielded:
        yield convert(_empty(schema), plan, target), None


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)


# ------------------------------------------------------------------ types


def convert(batch: pa.RecordBatch, plan: TablePlan, target: str) -> pa.Table:
    """The batch's columns in configured order under their sanitized names, with the types the
    ``target`` warehouse holds exactly (see the module's docstring)."""
    arrays = []
    for column in plan.columns:
        try:
            array = batch.column(column.source)
        except KeyError:  # the Storage Read API's names are as the table spells them
            index = [n.lower() for n in batch.schema.names].index(column.source.lower())
            array = batch.column(index)
        arrays.append(_convert(array, column, target, plan, batch))
    return pa.Table.from_arrays(arrays, names=[c.target for c in plan.columns])


def _convert(array: pa.Array, column: Column, target: str, plan: TablePlan, batch: pa.RecordBatch) -> pa.Array:
    if column.as_json_text:
        text = pa.array([None if v is None else _json_text(v) for v in array.to_pylist()], pa.string())
        array = pa.ExtensionArray.from_storage(pa.json_(), text)
    elif column.type == "JSON":
        array = pa.ExtensionArray.from_storage(pa.json_(), array.cast(pa.string()))
    elif column.type == "INTERVAL" or pa.types.is_interval(array.type):
        raise LoaderError(
            f"{plan.where}: column {column.source!r} is INTERVAL, which no warehouse here holds exactly",
            hint=f"leave it out of `columns`, or load a view that selects CAST({column.source} AS STRING)",
        )
    elif pa.types.is_decimal256(array.type) and target == "duckdb":  # DuckDB's decimals stop at 38 digits
        array = pa.array([None if v is None else _decimal_text(v) for v in array.to_pylist()], pa.string())
    if target == "postgres":
        _refuse_nul(array, column, plan, batch)
    return array


def _decimal_text(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _json_text(value: object) -> str:
    """A REPEATED or RECORD value as compact JSON text: exact for every BigQuery type (see
    docs/loaders.md)."""
    return json.dumps(_jsonable(value), ensure_ascii=False, separators=(",", ":"))


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Decimal):
        return _decimal_text(value)  # a string: no JSON reader rounds it
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _refuse_nul(array: pa.Array, column: Column, plan: TablePlan, batch: pa.RecordBatch) -> None:
    """Postgres text and jsonb cannot hold NUL: name the row rather than fail inside COPY."""
    storage = array.storage if isinstance(array, pa.ExtensionArray) else array
    if not (pa.types.is_string(storage.type) or pa.types.is_large_string(storage.type)):
        return
    found = pc.match_substring(storage, "\x00")
    if isinstance(array, pa.ExtensionArray):
        found = pc.or_(found, pc.match_substring(storage, "\\u0000"))
    if not pc.any(found).as_py():
        return
    row = pc.indices_nonzero(found.fill_null(False))[0].as_py()
    key = {c.target: _key_value(batch, c.source, row) for c in plan.columns if c.target in plan.keys}
    raise LoaderError(
        f"{plan.where}: column {column.source!r} of the row with key {key} holds a NUL character, "
        "which Postgres text and jsonb cannot store",
        hint="filter the row out (filter in loaders.yml) or load a view that removes the character",
    )


def _key_value(batch: pa.RecordBatch, name: str, row: int) -> object:
    names = [n.lower() for n in batch.schema.names]
    return batch.column(names.index(name.lower()))[row].as_py()


# ------------------------------------------------------------------ errors


def _loader_error(exc: BaseException, where: str, table: TableId, billing: str, setting: str) -> BaseException:
    error = read_error(exc, table, billing)
    if error is None:
        return exc
    return _from_read_error(error, None, billing, where, setting)


def _from_read_error(
    error: BigQueryReadError,
    plan: TablePlan | None,
    billing: str,
    where: str | None = None,
    setting: str | None = None,
) -> LoaderError:
    where = where or (plan.where if plan else str(error))
    reason = str(error).split(": ", 1)[-1]
    if error.kind == "not_found":
        setting = setting or "name"
        return LoaderError(f"{where}: {reason} ({setting} in loaders.yml)", hint=error.hint)
    if error.kind == "denied":
        return LoaderError(
            f"{where}: {reason} (billing project ROUNDTRIP_BQ_PROJECT={billing})",
            hint=error.hint,
        )
    setting = setting or ("filter" if plan and plan.filter else "columns")
    return LoaderError(f"{where}: {reason} (check {setting} in loaders.yml)", hint=error.hint)


__all__ = ["Column", "TablePlan", "convert", "describe", "estimate", "read_batches", "restriction"]
