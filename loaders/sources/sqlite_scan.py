"""Reading a SQLite table through DuckDB's sqlite scanner: typed Arrow batches, in C++, without
a Python object per value (the Python reader spends most of its time making those).

It is only an accelerator of ``loaders.sources.sqlite.read_batches``: it says up front when it
cannot give the same rows (``plan`` returns None), and a batch it cannot vouch for (the scanner
refused a value, a conversion is not provably exact, text that is not UTF-8) makes the caller
read on with the Python reader from that row, which then gives the exact value or the error.
Where it runs, SQLite's affinities already hold: an INTEGER column holds integers, a REAL column
reals, a TEXT column text (or a blob, checked), and the scanner refuses anything else.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from loaders.config import SqliteTableConfig
from loaders.sources import sqlite_fast
from roundtrip.core.sql import quote

if TYPE_CHECKING:
    from loaders.sources.sqlite import SqliteColumn

log = logging.getLogger(__name__)
# below this many rows DuckDB's start (~0.5 s: connect, load the extension) costs more than it saves
MIN_ROWS = 20_000
_PLAIN = (pa.int64(), pa.float64(), pa.string())


@dataclass(frozen=True)
class Plan:
    query: str  # its one parameter: the SQLite file


def keys_unique(con: sqlite3.Connection, table: SqliteTableConfig, columns: list[SqliteColumn]) -> bool:
    """The primary key can hold no repeat and no NULL: the rowid itself (an INTEGER PRIMARY KEY
    with no index of its own: ``INTEGER PRIMARY KEY DESC`` is not the rowid), or a unique,
    non-partial index on exactly those columns, all NOT NULL."""
    by_name = {c.name: c for c in columns}
    keys = set(table.primary_key)
    indexes = con.execute('select name, "unique", origin, partial from pragma_index_list(?)', [table.name]).fetchall()
    pk = [c for c in columns if c.primary_key_position > 0]
    if (
        len(keys) == 1
        and [c.name for c in pk] == table.primary_key
        and pk[0].declared_type.upper() == "INTEGER"
        and not any(origin == "pk" for _, _, origin, _ in indexes)
    ):
        return True
    if not all(by_name[k].not_null for k in keys):
        return False
    for name, unique, _, partial in indexes:
        if unique and not partial:
            indexed = {r[0] for r in con.execute("select name from pragma_index_info(?)", [name]).fetchall()}
            if indexed == keys:
                return True
    return False


def _collated(con: sqlite3.Connection, table: str) -> bool:
    """A column with its own collation sorts (and compares) otherwise in SQLite than in DuckDB."""
    row = con.execute("select sql from sqlite_master where type = 'table' and name = ?", [table]).fetchone()
    return row is None or row[0] is None or "collate" in row[0].lower()


def plan(
    con: sqlite3.Connection,
    table: SqliteTableConfig,
    columns: list[SqliteColumn],
    since: object | None,
    min_rows: int = MIN_ROWS,
) -> Plan | None:
    """The DuckDB query giving the rows ``sqlite._select`` gives for a whole table of at least
    ``min_rows`` rows, or None when it cannot."""
    kinds = table.timestamps
    for column in columns:
        kind = kinds.get(column.name)
        if kind == "date" or (kind is None and column.arrow_type not in _PLAIN):
            return None  # decimals, booleans, blobs, dates: the Python reader's rules
    if table.cursor and since is not None:
        return None  # an incremental read is mostly small: the scanner's start costs more than it saves
    if table.cursor and not keys_unique(con, table, columns):
        return None  # repeats are resolved by rowid, which the scanner does not show
    if _collated(con, table.name):
        return None
    counted = con.execute(f"select count(*) from {quote(table.name)}").fetchone()
    if counted is None or counted[0] < min_rows:
        return None
    names = ", ".join(quote(c.name) for c in columns)
    # SQLite sorts NULL first; DuckDB's default is last
    order = ", ".join(
        f"{quote(n)} asc nulls first" for n in ([table.cursor] if table.cursor else []) + table.primary_key
    )
    scan = f"sqlite_scan(?, {_literal(table.name)})"
    return Plan(f"select {names} from {scan} order by {order}")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def raw_batches(path: Path, query: Plan, batch_rows: int) -> Generator[pa.RecordBatch, None, None]:
    """The planned rows in batches of ``batch_rows`` (the sort runs before the first one)."""
    from roundtrip.core.duckdb_extensions import connect

    con: Any = connect(":memory:", extensions=("sqlite",))
    try:
        # one SQLite connection, so one read transaction: a snapshot, as the Python reader's one
        # statement sees (parallel scans read rowid ranges at different moments)
        con.execute("set sqlite_disable_multithreaded_scans = true")
        reader = con.execute(query.query, [str(path)]).to_arrow_reader(batch_rows)
        for batch in reader:
            if batch.num_rows:
                yield batch
    finally:
        con.close()


def convert(batch: pa.RecordBatch, columns: list[SqliteColumn], table: SqliteTableConfig) -> pa.Table | None:
    """A scanned batch converted as the configuration says, or None when one column cannot be
    converted here exactly."""
    arrays = []
    for column, raw in zip(columns, batch.columns):
        kind = table.timestamps.get(column.name)
        if pa.types.is_string(raw.type):
            try:
                raw.validate(full=True)  # a blob in a TEXT column passes through the scanner as it is
            except pa.ArrowInvalid:
                return None
        out: pa.Array | None
        if kind is None:
            out = raw if raw.type == column.arrow_type else None
        elif kind == "iso":
            out = sqlite_fast.iso_micros(raw.to_pylist()) if pa.types.is_string(raw.type) else None
        else:
            out = sqlite_fast.epoch_micros(raw, kind)
        if out is None:
            log.debug("%s.%s: batch read on by the Python reader", table.name, column.name)
            return None
        arrays.append(out)
    return pa.table(arrays, names=[c.name for c in columns])
