"""``reverse_etl.rejected_rows``: the rows a run did not write, with the reason, for the last
``KEEP_RUNS`` runs of each sync."""

from __future__ import annotations

from typing import Any

from reverse_etl.pg import PgSession
from reverse_etl.records import REASON, ROW, ROW_KEY
from reverse_etl.state.schema import SCHEMA
from roundtrip.core.sql import literal

KEEP_RUNS = 30


def keep(pg: PgSession, con: Any, run_id: int, sync: str, rejected: str) -> None:
    """In the run's transaction: the rows of ``rejected`` (a DuckDB query) under ``run_id``."""
    # jsonb cannot hold \u0000: a NUL byte (often the very reason of the rejection) is kept as U+FFFD
    row_key, row = (f"replace({c}, '\\u0000', '\\ufffd')::json" for c in (ROW_KEY, ROW))
    con.execute(
        f"""insert into {pg.table(SCHEMA, "rejected_rows")}
            select {int(run_id)}, {literal(sync)}, {row_key}, {REASON}, {row} from ({rejected})"""
    )


def prune(pg: PgSession, sync: str) -> None:
    """Keep the rejected rows of the last runs of ``sync`` only."""
    name = literal(sync)
    pg.execute(
        f"""delete from {SCHEMA}.rejected_rows where sync = {name} and run_id not in (
                select distinct run_id from {SCHEMA}.rejected_rows where sync = {name}
                order by run_id desc limit {KEEP_RUNS})"""
    )
