"""SQLite tables -> warehouse, driven by configuration only.

The schema is read from SQLite itself (``PRAGMA table_info``); declared types map to Arrow
types by SQLite's affinity rules, and ``NUMERIC(p, s)`` / ``DECIMAL(p, s)`` to exact decimals
(values rounded half away from zero to the declared scale). Columns named under ``timestamps``
are converted exactly: epoch seconds (INTEGER or REAL with fractions), epoch milliseconds and
ISO-8601 text become UTC timestamps with microseconds, ``date`` text (``YYYY-MM-DD``) becomes a
date. NULL stays NULL in every type. The keys read for delete propagation are converted by the
same rules as the rows, so they compare with the rows they identify.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import sqlite3
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

import pyarrow as pa

from loaders.config import SqliteTableConfig, TimestampKind
from loaders.errors import LoaderError
from loaders.sources import sqlite_fast, sqlite_scan
from roundtrip.core.sql import quote

log = logging.getLogger(__name__)
_DECIMAL = re.compile(r"(?:NUMERIC|DECIMAL)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class SqliteColumn:
    name: str
    declared_type: str
    not_null: bool
    primary_key_position: int

    @property
    def arrow_type(self) -> pa.DataType:
        """SQLite type affinity (https://sqlite.org/datatype3.html, section 3.1)."""
        declared = self.declared_type.upper()
        if "INT" in declared:
            return pa.int64()
        if any(word in declared for word in ("CHAR", "CLOB", "TEXT")):
            return pa.string()
        if "BLOB" in declared or not declared:
            return pa.binary() if "BLOB" in declared else pa.string()
        if any(word in declared for word in ("REAL", "FLOA", "DOUB")):
            return pa.float64()
        if "BOOL" in declared:
            return pa.bool_()
        fixed = _DECIMAL.search(declared)
        if fixed and 0 < int(fixed.group(1)) <= 38 and int(fixed.group(2) or 0) <= int(fixed.group(1)):
            return pa.decimal128(int(fixed.group(1)), int(fixed.group(2) or 0))
        return pa.string()  # other NUMERIC affinity (no precision, DATE, ...): kept as text, exact


def read_schema(con: sqlite3.Connection, table: str) -> list[SqliteColumn]:
    rows = con.execute('select name, type, "notnull", pk from pragma_table_info(?)', [table]).fetchall()
    if not rows:
        raise LoaderError(f"SQLite table {table!r} does not exist or has no columns")
    return [SqliteColumn(r[0], r[1] or "", bool(r[2]), int(r[3])) for r in rows]


def _to_timestamp(
    values: list[object], kind: TimestampKind, column: str, table: str, row_name: Callable[[int], str]
) -> pa.Array:
    out: list[int | None] = []
    for offset, value in enumerate(values):
        if value is None:
            out.append(None)
            continue
        try:
            if kind == "iso":
                parsed = datetime.fromisoformat(str(value))
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
                delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
                out.append((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)
            else:
                # repr() gives the shortest text that round-trips the float: exact microseconds
                micros = Decimal(repr(value) if isinstance(value, float) else str(value)) * (
                    1_000_000 if kind == "epoch_s" else 1_000
                )
                out.append(int(micros.to_integral_value()))
        except (ValueError, ArithmeticError) as exc:
            raise LoaderError(
                f"SQLite table {table!r}, {row_name(offset)}: column {column!r} value {value!r} "
                f"is not a {kind} timestamp ({exc})"
            ) from exc
    return pa.array(out, pa.timestamp("us", tz="UTC"))


def _to_date(values: list[object], column: str, table: str, row_name: Callable[[int], str]) -> pa.Array:
    out: list[date | None] = []
    for offset, value in enumerate(values):
        try:
            if value is not None and not (isinstance(value, str) and _ISO_DATE.fullmatch(value)):
                raise ValueError("not YYYY-MM-DD")
            out.append(None if value is None else date.fromisoformat(value))  # type: ignore[arg-type]
        except ValueError as exc:
            raise LoaderError(
                f"SQLite table {table!r}, {row_name(offset)}: column {column!r} value {value!r} is not a date ({exc})"
            ) from exc
    return pa.array(out, pa.date32())


def _to_decimal(
    values: list[object], wanted: pa.Decimal128Type, column: str, table: str, row_name: Callable[[int], str]
) -> pa.Array:
    """Exact: integers and text as they are, REAL through its shortest repr; rounded half away
    from zero to the declared scale; more digits than the precision is an error naming the row."""
    step = Decimal(1).scaleb(-wanted.scale)
    out: list[Decimal | None] = []
    for offset, value in enumerate(values):
        if value is None:
            out.append(None)
            continue
        try:
            text = repr(value) if isinstance(value, float) else str(value).strip()
            number = Decimal(text).quantize(step, rounding=ROUND_HALF_UP)
            if not number.is_finite() or len(number.as_tuple().digits) > wanted.precision:
                raise ValueError(f"does not fit decimal({wanted.precision}, {wanted.scale})")
        except (ValueError, ArithmeticError, InvalidOperation) as exc:
            raise LoaderError(
                f"SQLite table {table!r}, {row_name(offset)}: column {column!r} value {value!r} is not a "
                f"decimal({wanted.precision}, {wanted.scale}) ({exc})"
            ) from exc
        out.append(number)
    return pa.array(out, wanted)


def column_array(
    values: list[object],
    column: SqliteColumn,
    kind: TimestampKind | None,
    table: str,
    row_name: Callable[[int], str],
) -> pa.Array:
    """One column's values as Arrow, the way the configuration and the declared type say: the
    one conversion of both the rows and the keys."""
    if kind == "date":
        return _to_date(values, column.name, table, row_name)
    if kind is not None:
        fast = _fast_timestamp(values, kind)
        return fast if fast is not None else _to_timestamp(values, kind, column.name, table, row_name)
    wanted = column.arrow_type
    if pa.types.is_decimal(wanted):
        return _to_decimal(values, wanted, column.name, table, row_name)  # type: ignore[arg-type]
    fast = sqlite_fast.plain(values, wanted)
    return fast if fast is not None else _typed(values, column, table, row_name)


def _fast_timestamp(values: list[object], kind: TimestampKind) -> pa.Array | None:
    """The vectorised conversion where it is provably the same (else None: value by value)."""
    if kind == "iso":
        return sqlite_fast.iso_micros(values)
    if not all(type(v) in (int, float) or v is None for v in values):
        return None  # text in a numeric column: the Decimal rule reads it (or words the error)
    try:
        numbers = pa.array(values, pa.float64() if any(type(v) is float for v in values) else pa.int64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    return sqlite_fast.epoch_micros(numbers, kind)


def _select(
    table: SqliteTableConfig, names: list[str], since: object | None, unique: bool = False
) -> tuple[str, list[object]]:
    """The read query. With a cursor, a key that appears more than once keeps only its latest row
    (highest cursor, then highest rowid): duplicates are resolved at the source, deterministically.
    A key that cannot repeat (``unique``) needs no such window: the same rows, one sort less."""
    columns = ", ".join(quote(n) for n in names)
    where, params = "", []
    if table.cursor and since is not None:
        where, params = f" where {quote(table.cursor)} >= ?", [since]
    order = ", ".join(quote(n) for n in ([table.cursor] if table.cursor else []) + table.primary_key)
    if not table.cursor or unique:
        return f"select {columns} from {quote(table.name)}{where} order by {order}", params
    keys = ", ".join(quote(k) for k in table.primary_key)
    return (
        f"select {columns} from (select {columns}, row_number() over "
        f"(partition by {keys} order by {quote(table.cursor)} desc, rowid desc) as _latest "
        f"from {quote(table.name)}{where}) where _latest = 1 order by {order}",
        params,
    )


def read_batches(
    path: Path,
    table: SqliteTableConfig,
    since: object | None = None,
    batch_rows: int = 100_000,
    scan_min_rows: int = sqlite_scan.MIN_ROWS,
) -> Iterator[tuple[pa.Table, object | None]]:
    """Yield the table (or rows with ``cursor >= since``) as Arrow tables of ``batch_rows``,
    each with the largest raw cursor value it holds (the next watermark). An empty result
    still yields one empty table, so the target table exists with the right columns.

    ``>=`` rather than ``>``: rows sharing the watermark's value are read again and found
    unchanged by the MERGE, so none is skipped at the boundary and none is loaded twice.

    Reads of at least ``scan_min_rows`` rows go through DuckDB's sqlite scanner where it gives
    the same rows (``sqlite_scan``); from the first batch it cannot vouch for, and for every
    other read, the Python reader below reads on.
    """
    if not path.exists():
        raise LoaderError(f"SQLite database {path} does not exist")
    # the consumer may pull batches from another thread (gRPC iterates BigQuery append requests
    # in its own): one thread at a time uses the connection, never two at once
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        columns = read_schema(con, table.name)
        names = [c.name for c in columns]
        for setting, wanted in (("primary_key", table.primary_key), ("timestamps", list(table.timestamps))):
            missing = [n for n in wanted if n not in names]
            if missing:
                raise LoaderError(f"loaders.yml: table {table.name!r} {setting} names unknown column(s) {missing}")
        if table.cursor and table.cursor not in names:
            raise LoaderError(f"loaders.yml: table {table.name!r} cursor {table.cursor!r} is not a column")
        read = 0
        planned = sqlite_scan.plan(con, table, columns, since, scan_min_rows)
        if planned is not None:
            read, done = yield from _scanned(path, planned, columns, table, batch_rows)
            if done:
                return
        yield from _python_batches(con, table, columns, since, batch_rows, read)
    finally:
        con.close()


def _scanned(
    path: Path, planned: sqlite_scan.Plan, columns: list[SqliteColumn], table: SqliteTableConfig, batch_rows: int
) -> Generator[tuple[pa.Table, object | None], None, tuple[int, bool]]:
    """The scanner's batches until one it cannot vouch for; returns (rows given, all given)."""
    position = [c.name for c in columns].index(table.cursor) if table.cursor else None
    read = 0
    try:
        with contextlib.closing(sqlite_scan.raw_batches(path, planned, batch_rows)) as batches:
            for raw in batches:
                converted = sqlite_scan.convert(raw, columns, table)
                if converted is None:
                    return read, False
                yield converted, sqlite_fast.raw_max(raw.column(position)) if position is not None else None
                read += raw.num_rows
    except Exception as exc:  # the scanner refused a value (or is missing): the Python reader says why
        log.debug("%s: DuckDB's scanner stopped after %d rows (%s); the Python reader reads on", table.name, read, exc)
        return read, False
    return read, read > 0


def _python_batches(
    con: sqlite3.Connection,
    table: SqliteTableConfig,
    columns: list[SqliteColumn],
    since: object | None,
    batch_rows: int,
    skip: int,
) -> Iterator[tuple[pa.Table, object | None]]:
    """The rows from position ``skip`` on (the scanner gave those before), converted value by value."""
    names = [c.name for c in columns]
    unique = bool(table.cursor) and sqlite_scan.keys_unique(con, table, columns)
    query, params = _select(table, names, since, unique)
    if skip:
        query += f" limit -1 offset {int(skip)}"
    cursor = con.execute(query, params)
    read = skip
    while True:
        rows = cursor.fetchmany(batch_rows)
        if not rows and read:
            break
        row_name = functools.partial(_row_name, rows, read, table.primary_key, names)
        values = list(zip(*rows)) if rows else [() for _ in columns]
        arrays = [
            column_array(list(values[i]), column, table.timestamps.get(column.name), table.name, row_name)
            for i, column in enumerate(columns)
        ]
        raw_max = None
        if table.cursor:
            cursor_values = values[names.index(table.cursor)]
            raw_max = max((v for v in cursor_values if v is not None), default=None)  # type: ignore[type-var]
        yield pa.table(arrays, names=names), raw_max
        if not rows:
            break
        read += len(rows)


def _row_name(rows: list[tuple], first_row: int, keys: list[str], names: list[str], offset: int) -> str:  # type: ignore[type-arg]
    """How an error names a row: its position in the read and its key."""
    key = ", ".join(f"{k}={rows[offset][names.index(k)]!r}" for k in keys)
    return f"row {first_row + offset + 1} ({key})"


def _coerce(value: object, wanted: pa.DataType) -> object:
    """SQLite's storage classes to what the Arrow type takes: 0/1 for booleans, numbers kept as
    their text in text columns. Anything else goes through unchanged (and fails loudly)."""
    if value is None:
        return None
    if pa.types.is_boolean(wanted) and isinstance(value, int) and value in (0, 1):
        return bool(value)
    if pa.types.is_string(wanted) and isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    return value


def _typed(values: list[object], column: SqliteColumn, table: str, row_name: Callable[[int], str]) -> pa.Array:
    wanted = column.arrow_type
    coerced = [_coerce(v, wanted) for v in values]
    try:
        return pa.array(coerced, wanted)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # SQLite stores any value in any column: name the first row that does not fit
        for offset, value in enumerate(coerced):
            try:
                pa.array([value], wanted)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                raise LoaderError(
                    f"SQLite table {table!r}, {row_name(offset)}: column {column.name!r} "
                    f"declared {column.declared_type or 'untyped'} holds {values[offset]!r} ({exc})"
                ) from exc
        raise


def read_keys(path: Path, table: SqliteTableConfig) -> pa.Table:
    """Every key currently in the source (for delete propagation)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        columns = {c.name: c for c in read_schema(con, table.name)}
        rows = con.execute(
            f"select distinct {', '.join(quote(k) for k in table.primary_key)} from {quote(table.name)}"
        ).fetchall()
    finally:
        con.close()
    return pa.table(
        [
            column_array(
                [r[i] for r in rows],
                columns[k],
                table.timestamps.get(k),
                table.name,
                lambda offset: f"key row {offset + 1}",
            )
            for i, k in enumerate(table.primary_key)
        ],
        names=table.primary_key,
    )
