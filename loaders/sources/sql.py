"""Tables of a SQL database (PostgreSQL, MySQL/MariaDB, SQLite) as Arrow batches.

Two readers, chosen per source in ``loaders.yml`` (``reader:``):

- ``sqlalchemy`` (default): any database SQLAlchemy speaks. Columns and types come from its
  inspector (reflection), rows are streamed with a server-side cursor, ``batch_rows`` at a time.
- ``duckdb``: PostgreSQL only, through DuckDB's postgres extension (from the
  ``duckdb-extension-postgres`` package): binary COPY, much faster on big tables.

Incremental reads take ``cursor >= watermark`` (not ``>``): rows that share the watermark's
value are read again and found unchanged by the MERGE, so none is lost and none doubled.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from loaders.config import SqlSourceConfig, SqlTableConfig
from loaders.errors import LoaderError
from roundtrip.core.sql import quote as q

log = logging.getLogger(__name__)

Batch = tuple[pa.Table, object | None]  # rows, largest cursor value among them


def read_table(
    source: SqlSourceConfig, table: SqlTableConfig, since: object | None = None, batch_rows: int = 100_000
) -> Iterator[Batch]:
    """Rows of ``source_schema.table`` (only ``cursor >= since`` when incremental); at least one
    (possibly empty) batch, so the target gets its columns even when there is no row."""
    if not source.url:
        raise LoaderError("loaders.yml: sql source has no url (for the catalog: set ROUNDTRIP_CATALOG_URL)")
    batches = _read_duckdb(source, table, since, batch_rows) if source.reader == "duckdb" else None
    if batches is None:
        batches = _read_sqlalchemy(source, table, since, batch_rows)
    for batch in batches:
        top = pc.max(batch.column(table.cursor)).as_py() if table.cursor and batch.num_rows else None
        yield batch, top


# ------------------------------------------------------------------ SQLAlchemy


def sqlalchemy_url(url: str) -> str:
    """A libpq or mysql URL with the driver this project installs (psycopg 3, PyMySQL)."""
    for prefix, driver in (
        ("postgresql://", "postgresql+psycopg://"),
        ("postgres://", "postgresql+psycopg://"),
        ("mysql://", "mysql+pymysql://"),
        ("mariadb://", "mariadb+pymysql://"),
    ):
        if url.startswith(prefix):
            return driver + url[len(prefix) :]
    return url


def arrow_type(sql_type: Any) -> pa.DataType:
    """SQLAlchemy's reflected type -> Arrow. Exact where it matters: fixed decimals stay decimals,
    timestamps keep their zone; anything unknown arrives as text rather than being guessed."""
    import sqlalchemy as sa

    if isinstance(sql_type, sa.Boolean):
        return pa.bool_()
    if isinstance(sql_type, sa.Integer):
        return pa.int64()
    if isinstance(sql_type, sa.Float) or (isinstance(sql_type, sa.Numeric) and sql_type.asdecimal is False):
        return pa.float64()
    if isinstance(sql_type, sa.Numeric):
        precision, scale = sql_type.precision, sql_type.scale
        if precision is not None and scale is not None and precision <= 38:
            return pa.decimal128(precision, scale)
        return pa.string()  # unbounded NUMERIC: its exact text
    if isinstance(sql_type, sa.DateTime):
        return pa.timestamp("us", tz="UTC") if sql_type.timezone else pa.timestamp("us")
    if isinstance(sql_type, sa.Date):
        return pa.date32()
    if isinstance(sql_type, sa.Time):
        return pa.time64("us")
    if isinstance(sql_type, sa.LargeBinary):
        return pa.binary()
    return pa.string()


def _to_arrow(values: list[Any], type_: pa.DataType, where: str) -> pa.Array:
    if pa.types.is_string(type_):
        values = [v if v is None or isinstance(v, str) else _as_text(v) for v in values]
    try:
        return pa.array(values, type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise LoaderError(f"{where}: a value does not fit {type_}: {exc}") from exc


def _as_text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _read_sqlalchemy(
    source: SqlSourceConfig, table: SqlTableConfig, since: object | None, batch_rows: int
) -> Iterator[pa.Table]:
    import sqlalchemy as sa

    engine = sa.create_engine(sqlalchemy_url(source.url))
    where = f"{source.source_schema + '.' if source.source_schema else ''}{table.name}"
    try:
        try:
            reflected = sa.Table(table.name, sa.MetaData(), schema=source.source_schema, autoload_with=engine)
        except sa.exc.NoSuchTableError:
            raise LoaderError(f"sql source: table {where} does not exist") from None
        except sa.exc.OperationalError as exc:  # the message may echo the URL: keep only the reason
            raise LoaderError(f"cannot connect to the database of {where}: {exc.orig}") from None
        names = [c.name for c in reflected.columns]
        for column in [*table.primary_key, *([table.cursor] if table.cursor else [])]:
            if column not in names:
                raise LoaderError(f"loaders.yml: {where} has no column {column!r} (has {names})")
        types = [arrow_type(c.type) for c in reflected.columns]
        query = sa.select(reflected)
        if table.cursor and since is not None:
            query = query.where(reflected.c[table.cursor] >= since)
        order = [table.cursor] if table.cursor else []
        query = query.order_by(*(reflected.c[n] for n in order + table.primary_key))
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(query)
            yielded = False
            for rows in result.partitions():
                columns = list(zip(*rows))
                yield pa.table([_to_arrow(list(col), t, where) for col, t in zip(columns, types)], names=names)
                yielded = True
            if not yielded:
                yield pa.table([pa.array([], t) for t in types], names=names)
    finally:
        engine.dispose()


# ------------------------------------------------------------------ DuckDB postgres extension


def _read_duckdb(
    source: SqlSourceConfig, table: SqlTableConfig, since: object | None, batch_rows: int
) -> Iterator[pa.Table]:
    from roundtrip.core.duckdb_extensions import connect

    if not source.url.startswith(("postgresql://", "postgres://")):
        raise LoaderError("loaders.yml: reader 'duckdb' reads PostgreSQL only; use reader 'sqlalchemy'")
    con = connect(extensions=("postgres",))
    alias = f"src_{uuid.uuid4().hex[:8]}"
    try:
        try:
            literal = source.url.replace("'", "''")  # ATTACH takes no parameters
            con.execute(f"attach '{literal}' as {alias} (type postgres, read_only)")
        except Exception as exc:  # the message may echo the URL and its password: redact it
            raise LoaderError(
                f"cannot attach the {source.source_schema} database: " + str(exc).replace(source.url, "<url>")
            ) from None
        relation = f"{alias}.{q(source.source_schema or 'public')}.{q(table.name)}"
        query, params = f"select * from {relation}", []
        if table.cursor and since is not None:
            query += f" where {q(table.cursor)} >= ?"
            params.append(since)
        try:
            reader = con.execute(query, params).to_arrow_reader(batch_rows)
        except Exception as exc:
            raise LoaderError(f"cannot read {source.source_schema}.{table.name}: {exc}") from exc
        yielded = False
        for batch in reader:
            yield pa.Table.from_batches([batch])
            yielded = True
        if not yielded:
            yield reader.schema.empty_table()
    finally:
        con.close()
