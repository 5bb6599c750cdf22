"""Postgres sync: reverse_etl's upsert against a plain COPY and the original service's executemany.

Per repetition, on the same model rows and the same server, interleaved:
- reverse_etl's first sync (the table does not exist: the run creates it and COPYs into it);
- the baseline COPY: the same rows read from DuckDB as Arrow, written as CSV by one COPY into an
  unlogged table without indexes (the fastest plain way in);
- the second baseline: the same COPY into a logged table, then its primary key built (what
  Postgres itself costs for a durable, keyed table: the cost a sync cannot avoid);
- the third: DuckDB's own reload through its postgres extension (``CREATE TABLE ... AS SELECT``
  into a logged table, then its primary key): the plain way to put a mart into Postgres, which a
  first sync should match and a re-sync should beat;
- a re-sync after 1 % of the rows changed (compared with the first sync's time and the reload);
- a re-sync where every row changed: the table is written whole (TRUNCATE + COPY in key order,
  ``rewrite_above_pct``), and the same with the rewrite turned off (staging + INSERT ... ON
  CONFLICT), the write a smaller share of changes takes.
Once per run: psycopg ``executemany`` of ``INSERT ... ON CONFLICT`` in batches of 1000, the
original service's way (capped at EXECUTEMANY_ROWS rows: it is a rate, and slow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import psycopg

from benchmarks.core import Context, Result, environment, human, interleaved, timed
from benchmarks.sync_data import COLUMNS, MODEL, build_model, change_rows, forget_state, postgres_spec
from reverse_etl.engine import Connections, run_sync
from reverse_etl.state.doubts import csv_bytes

NAME = "postgres_sync"
EXECUTEMANY_ROWS = 200_000
TARGET_TABLE = "crm.bench_segments"
TABLE_DDL = """(user_id bigint, email text, display_name text, segment text, lifetime_value numeric(18, 2),
                order_count bigint, last_order_at timestamp, engagement_score double precision)"""


def reset(url: str, sync: str) -> None:
    """Nothing written yet: no table, no state for the sync."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"drop table if exists {TARGET_TABLE}")
    forget_state(url, sync)


def sync_once(url: str, sync: str, expect: dict[str, int], **settings: Any) -> None:
    result = run_sync(postgres_spec(sync, TARGET_TABLE, **settings), Connections.of(postgres_url=url))
    got = {k: v for k, v in result.counts.as_dict().items() if k in expect}
    if not result.ok or got != expect:
        raise RuntimeError(f"sync {sync}: {result.status} {result.error or ''} counts {got}, expected {expect}")


def copy_baseline(url: str, warehouse: Path, logged: bool = False) -> int:
    """The rows by one COPY into an unlogged table without index, or (``logged``) into a logged
    table whose primary key is built after the COPY: what Postgres itself costs for what a sync
    leaves behind (a durable table with its key)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    rows = 0
    try:
        reader = con.execute(f"select {COLUMNS} from {MODEL}").to_arrow_reader(50_000)
        with psycopg.connect(url) as conn, conn.cursor() as cur:
            cur.execute("drop table if exists bench_copy")
            cur.execute(f"create {'' if logged else 'unlogged '}table bench_copy {TABLE_DDL}")
            with cur.copy("copy bench_copy from stdin (format csv)") as copy:
                for batch in reader:
                    rows += batch.num_rows
                    copy.write(csv_bytes(batch))
            if logged:
                cur.execute("alter table bench_copy add primary key (user_id)")
            conn.commit()
    finally:
        con.close()
    return rows


def duckdb_reload(url: str, warehouse: Path) -> int:
    """The mart reloaded whole by DuckDB's postgres extension: a new logged table from the
    model's rows (the extension's binary COPY), then its primary key, in one transaction."""
    from roundtrip.core.duckdb_extensions import connect
    from roundtrip.core.sql import literal

    con = connect(extensions=("postgres",))
    try:
        con.execute(f"attach {literal(str(warehouse))} as wh (read_only)")
        con.execute(f"attach {literal(url)} as pg (type postgres)")
        con.execute("call postgres_execute('pg', 'drop table if exists bench_reload')")
        con.execute("begin")
        con.execute(f"create table pg.public.bench_reload as select {COLUMNS} from wh.{MODEL}")
        con.execute("call postgres_execute('pg', 'alter table bench_reload add primary key (user_id)')")
        con.execute("commit")
        row = con.execute("select count(*) from pg.public.bench_reload").fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()


def upsert_statement_seconds(url: str) -> float:
    """Postgres's own share of an all-changed upsert: the sync's table, every row changed in an
    unlogged staging table, and only the ``INSERT ... ON CONFLICT DO UPDATE ... WHERE IS
    DISTINCT FROM`` timed (no reading, no fingerprints, no COPY, no state)."""
    names = [c.strip() for c in COLUMNS.split(",")]
    others = names[1:]
    differs = f"({', '.join('t.' + c for c in others)}) is distinct from ({', '.join('excluded.' + c for c in others)})"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("drop table if exists bench_stage")
        conn.execute(f"create unlogged table bench_stage as select {COLUMNS} from {TARGET_TABLE}")
        conn.execute("update bench_stage set engagement_score = engagement_score + 1")
        conn.execute("analyze bench_stage")
        took, _ = timed(
            lambda: conn.execute(
                f"""with done as (insert into {TARGET_TABLE} as t ({COLUMNS}) select {COLUMNS} from bench_stage
                    order by user_id on conflict (user_id) do update set
                    {", ".join(f"{c} = excluded.{c}" for c in others)} where {differs}
                    returning (xmax = 0) as is_insert) select count(*) from done"""
            )
        )
        conn.execute("drop table bench_stage")
    return took


def executemany_baseline(url: str, warehouse: Path, limit: int) -> int:
    """The original service: rows as Python tuples, 1000 per executemany of an upsert."""
    names = [c.strip() for c in COLUMNS.split(",")]
    updates = ", ".join(f"{c} = excluded.{c}" for c in names[1:])
    statement = (
        f"insert into bench_executemany ({', '.join(names)}) values ({', '.join(['%s'] * len(names))}) "
        f"on conflict (user_id) do update set {updates}"
    )
    con = duckdb.connect(str(warehouse), read_only=True)
    rows = 0
    try:
        source = con.execute(f"select {COLUMNS} from {MODEL} order by user_id limit {limit}")
        with psycopg.connect(url) as conn, conn.cursor() as cur:
            cur.execute("drop table if exists bench_executemany")
            cur.execute(f"create table bench_executemany {TABLE_DDL[:-1]}, primary key (user_id))")
            while batch := source.fetchmany(1000):
                cur.executemany(statement, batch)
                rows += len(batch)
            conn.commit()
    finally:
        con.close()
    return rows


def run(ctx: Context) -> list[Result]:
    n = ctx.size
    url = ctx.postgres().url()
    warehouse = ctx.path(NAME) / "warehouse.duckdb"
    build_model(warehouse, n)
    sync = "bench_postgres"
    changed = -(-n // 100)  # user_id % 100 = 0 for ids 1..n, rounded as DuckDB counts them
    with environment(ROUNDTRIP_DUCKDB_PATH=str(warehouse)):

        def first() -> None:
            reset(url, sync)
            sync_once(url, sync, {"inserted": n, "updated": 0})

        seconds: dict[str, list[float]] = {
            "first": [], "copy": [], "copy_logged": [], "reload": [], "resync": [], "update_all": [], "upsert_all": []
        }  # fmt: skip
        runs = {
            "first": first,
            "copy": lambda: copy_baseline(url, warehouse),
            "copy_logged": lambda: copy_baseline(url, warehouse, logged=True),
            "reload": lambda: duckdb_reload(url, warehouse),
        }
        for _ in range(ctx.repeat):
            for name, secs in interleaved(runs, 1).items():
                seconds[name] += secs
            changed = change_rows(warehouse, 100)
            seconds["resync"].append(timed(lambda: sync_once(url, sync, {"inserted": 0, "updated": changed}))[0])  # noqa: B023
            change_rows(warehouse, 1, "engagement_score")
            seconds["update_all"].append(timed(lambda: sync_once(url, sync, {"inserted": 0, "updated": n}))[0])
            change_rows(warehouse, 1, "engagement_score")
            upsert = lambda: sync_once(url, sync, {"inserted": 0, "updated": n}, rewrite_above_pct=100)  # noqa: E731
            seconds["upsert_all"].append(timed(upsert)[0])
        seconds["unchanged"] = [timed(lambda: sync_once(url, sync, {"inserted": 0, "updated": 0}))[0]]
        seconds["upsert_statement"] = [upsert_statement_seconds(url)]
        limit = min(n, EXECUTEMANY_ROWS)
        executemany_seconds, _ = timed(lambda: executemany_baseline(url, warehouse, limit))

    best = {k: min(v) for k, v in seconds.items()}
    details = {"seconds": seconds, "rows": n}
    copy_rate = n / best["copy"]
    return [
        Result(NAME, f"rows/s, first sync of {human(n)} rows", n / best["first"], "rows/s", copy_rate,
               "COPY into an unlogged table", ">= 0.5", details=details),
        Result(NAME, f"rows/s, first sync of {human(n)} rows", n / best["first"], "rows/s", n / best["copy_logged"],
               "COPY into a logged table, then its primary key", ">= 0.9"),
        Result(NAME, f"rows/s, first sync of {human(n)} rows", n / best["first"], "rows/s", n / best["reload"],
               "DuckDB's reload: CREATE TABLE AS through its postgres extension, then the key", ">= 0.9"),
        Result(NAME, f"rows/s, first sync of {human(n)} rows", n / best["first"], "rows/s", limit / executemany_seconds,
               f"executemany upsert, batches of 1000 ({human(limit)} rows)",
               details={"executemany_seconds": executemany_seconds, "rows": limit}),
        Result(NAME, f"rows/s, re-sync of {human(n)} rows all changed", n / best["update_all"], "rows/s", copy_rate,
               "COPY into an unlogged table", ">= 0.3"),
        Result(NAME, f"seconds, re-sync of {human(n)} rows all changed", best["update_all"], "s", best["first"],
               "the first (full) sync", "<= 1.2",
               note="written whole (TRUNCATE + COPY): the table, its key and the run's atomicity kept"),
        Result(NAME, f"seconds, re-sync of {human(n)} rows all changed", best["update_all"], "s", best["upsert_all"],
               "the same re-sync as an upsert (rewrite_above_pct: 100)", note="what the rewrite saves"),
        Result(NAME, f"rows/s, upsert of {human(n)} rows all changed", n / best["upsert_all"], "rows/s",
               n / best["upsert_statement"], "its INSERT ... ON CONFLICT alone, from a staged table",
               note="Postgres's own share of the all-changed upsert"),
        Result("postgres_resync", f"seconds, re-sync with 1 % changed ({human(changed)} rows)", best["resync"], "s",
               best["first"], "the first (full) sync", "<= 0.1"),
        Result("postgres_resync", f"seconds, re-sync with 1 % changed ({human(changed)} rows)", best["resync"], "s",
               best["reload"], "DuckDB's reload of every row", "<= 0.5"),
        Result("postgres_resync", "seconds, re-sync with nothing changed", best["unchanged"], "s",
               best["first"], "the first (full) sync", note="the floor: read and fingerprint the model, one join"),
        Result("postgres_resync", "seconds, re-sync with nothing changed", best["unchanged"], "s",
               best["reload"], "DuckDB's reload of every row", "<= 0.3"),
    ]  # fmt: skip
