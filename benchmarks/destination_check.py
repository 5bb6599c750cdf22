"""Is a Postgres table, read back, the mart? The benchmarks report no figure for a wrong copy.

DuckDB reads both sides (the warehouse file and, through its postgres extension, the
destination table) and compares them as multisets of rows: every row of the mart once, nothing
else. The destination's columns are cast to the mart's types first, so that a tool's own
choices (``numeric`` without a scale, ``timestamptz`` for a naive timestamp, ``varchar`` for
``text``) do not count as differences while any changed value does; the tools' own bookkeeping
columns (dlt's ``_dlt_id``) are left out.
"""

from __future__ import annotations

from pathlib import Path

from roundtrip.core.duckdb_extensions import connect
from roundtrip.core.sql import duck_ident, literal

SHOWN = 3  # differing rows quoted in the error


class DestinationDiffers(AssertionError):
    """The destination does not hold exactly the mart's rows."""


def check_equal(warehouse: Path, model: tuple[str, str], postgres_url: str, table: tuple[str, str], who: str) -> int:
    """Raise ``DestinationDiffers`` unless ``table`` holds exactly the rows of ``model``; returns
    the row count."""
    con = connect(extensions=("postgres",))
    try:
        con.execute(f"attach {literal(str(warehouse))} as wh (read_only)")
        con.execute(f"attach {literal(postgres_url)} as pg (type postgres, read_only)")
        mart = duck_ident("wh", *model)
        columns = con.execute(f"select column_name, column_type from (describe {mart})").fetchall()
        names = ", ".join(duck_ident(name) for name, _ in columns)
        cast = ", ".join(f"cast({duck_ident(name)} as {kind}) as {duck_ident(name)}" for name, kind in columns)
        ours = f"select {names} from {mart}"
        theirs = f"select {cast} from {duck_ident('pg', *table)}"
        (mart_rows, dest_rows), *_ = con.execute(
            f"select (select count(*) from ({ours})), (select count(*) from ({theirs}))"
        ).fetchall()
        missing = con.execute(f"{ours} except all {theirs} limit {SHOWN}").fetchall()
        extra = con.execute(f"{theirs} except all {ours} limit {SHOWN}").fetchall()
    finally:
        con.close()
    if missing or extra or mart_rows != dest_rows:
        raise DestinationDiffers(
            f"{who}: {'.'.join(table)} holds {dest_rows} rows, the mart {mart_rows}; "
            f"rows of the mart missing or different there: {missing}; rows there that the mart has not: {extra}"
        )
    return int(dest_rows)
