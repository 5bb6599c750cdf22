"""SQL spelling shared by the loaders and reverse_etl: identifier quoting and the Postgres
type of an Arrow column (for a table created from Arrow data)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa


def _checked(part: str) -> str:
    if "\x00" in part:
        raise ValueError(f"an identifier cannot hold a NUL byte: {part!r}")
    return part


def duck_ident(*parts: str) -> str:
    """DuckDB (and SQLite): ``"a"."b"``, each part quoted, a quote doubled: the one way every
    DuckDB relation and column is named in the project's SQL, whatever the name holds (``"``,
    ``;``, ``.``, spaces, unicode)."""
    return ".".join('"' + _checked(p).replace('"', '""') + '"' for p in parts)


def pg_ident(*parts: str) -> str:
    """Postgres: ``"a"."b"`` as psycopg's ``sql.Identifier`` spells it, for SQL text sent to
    Postgres (through psycopg or DuckDB's ``postgres_execute``)."""
    from psycopg import sql

    return sql.Identifier(*(_checked(p) for p in parts)).as_string(None)


def quote(identifier: str) -> str:
    """One identifier, quoted (DuckDB, Postgres and SQLite agree: a doubled quote escapes a quote)."""
    return duck_ident(identifier)


def quote_backtick(identifier: str) -> str:
    """```identifier``` (BigQuery): backslash escapes backslash and backtick."""
    return "`" + identifier.replace("\\", "\\\\").replace("`", "\\`") + "`"


def literal(text: str) -> str:
    """``'text'``: a SQL string literal (a doubled quote escapes a quote)."""
    return "'" + text.replace("'", "''") + "'"


def postgres_type(arrow_type: pa.DataType) -> str | None:
    """The Postgres column type that holds an Arrow type without loss; None when there is none
    (nested types: the caller names the column in its error)."""
    import pyarrow as pa

    t = arrow_type
    if isinstance(t, pa.JsonType):  # jsonb: compared by value (a MERGE needs equality; json has none)
        return "jsonb"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_uint8(t):
        return "smallint"
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return "integer"
    if pa.types.is_int64(t) or pa.types.is_uint32(t):
        return "bigint"
    if pa.types.is_uint64(t):
        return "numeric(20, 0)"
    if pa.types.is_floating(t):
        return "double precision"
    if pa.types.is_decimal(t):
        return f"numeric({t.precision}, {t.scale})"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_time(t):
        return "time"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "text"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "bytea"
    return None
