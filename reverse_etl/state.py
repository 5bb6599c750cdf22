"""Per-sync state in the `reverse_etl` schema of the Postgres at ROUNDTRIP_POSTGRES_URL, and
its local cache.

The state says, for each record a sync wrote, its identity (typed like the model's key: a
Postgres destination's primary key, a Redis key) and a fingerprint of what was written. It is a
cache of the destination that never claims more than the destination holds:

- ``syncs``: one row per sync: its state tables, its identity columns, the number of records it
  owns (``live``) and a ``version`` bumped by every commit that changes its state.
- ``rows_<id>`` (one per sync): the state as a log, appended to by each run in its transaction
  (new, changed and healed records with their fingerprint; gone ones as tombstones), each row
  stamped with the run; the current state is the last entry per identity. Appending costs what
  the run changed, never what it did not; the log is rewritten when it has grown to twice the
  live records. Its reader is the cache rebuild, not every run.
- ``doubt_<id>``: the write-ahead of destinations outside the state's transaction (Redis): the
  identities a run is about to send, committed before the first write and cleared in the commit
  that records what was written. A run killed in between leaves them; the next run reads their
  state as unknown and sends them again (and for mirror, deletes them if the model dropped
  them), so a crash never leaves a wrong value behind an "unchanged" record.
- ``rejected_rows``, ``runs`` (``reverse_etl.runs``), ``pending_refreshes``, ``sync_schemas``
  (the model columns each sync last sent, for ``on_schema_change``).

The run's own DuckDB keeps the current state in a local cache file per sync
(``$ROUNDTRIP_DATA_DIR/reverse_etl/``), stamped with the ``version`` it reflects. A run whose
cache has the version Postgres holds classifies against it without reading the state over the
network; any other (a first run on this machine, a run killed after its commit, a state changed
elsewhere) rebuilds it from the log first. The cache is updated after the commit; a run that
dies before that leaves a stale version, never a wrong state. A sync's first state, which has
nothing to update in place, is written whole before the commit into a file of its own (beside
the Redis writes, on a cursor of the run's connection) that replaces the cache only once the
commit is in.

Everything a run writes to this Postgres commits in one transaction (``reverse_etl.pg``): a
failed run leaves the state as it was, and the next run resends what it had sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from reverse_etl.pg import Postgres
from reverse_etl.records import CHANGED, EMPTY_STATE, HEALED, NEW, REASON, ROW, ROW_KEY, SENT, Records
from reverse_etl.spec import SyncSpec
from roundtrip.core.read_ahead import read_ahead
from roundtrip.core.sql import literal, postgres_type, quote

log = logging.getLogger(__name__)

SCHEMA = "reverse_etl"
DDL_LOCK = "hashtextextended('reverse_etl:ddl', 0)"
KEEP_REJECTED_RUNS = 30  # rejected rows are kept for the last runs of each sync
REWRITE_FACTOR = 2  # the log is rewritten when it holds this many times the live records
CACHE_ALIAS = "rt_cache"

STATE_DDL = f"""
create schema if not exists {SCHEMA};
create table if not exists {SCHEMA}.runs (
    run_id bigint generated always as identity primary key,
    sync text not null,
    mode text not null,
    destination text not null,
    status text not null,
    started_at timestamptz not null default clock_timestamp(),
    ended_at timestamptz,
    attempts integer not null default 1,
    read bigint, inserted bigint, updated bigint, unchanged bigint, deleted bigint, rejected bigint,
    error text
);
alter table {SCHEMA}.runs add column if not exists healed bigint;
create index if not exists runs_by_sync on {SCHEMA}.runs (sync, run_id desc);
create table if not exists {SCHEMA}.syncs (
    sync text primary key,
    rows_table text not null,
    doubt_table text not null,
    identity jsonb not null,
    version bigint not null default 0,
    live bigint not null default 0,
    logged bigint not null default 0
);
create table if not exists {SCHEMA}.rejected_rows (
    run_id bigint not null references {SCHEMA}.runs on delete cascade,
    sync text not null,
    row_key jsonb not null,
    reason text not null,
    row_data jsonb not null
);
create index if not exists rejected_rows_by_run on {SCHEMA}.rejected_rows (run_id);
create table if not exists {SCHEMA}.pending_refreshes (
    sync text primary key,
    models text[] not null,
    since timestamptz not null default now()
);
create table if not exists {SCHEMA}.sync_schemas (
    sync text primary key,
    columns jsonb not null,
    recorded_at timestamptz not null default now()
);
create or replace view {SCHEMA}.latest_runs as
    select distinct on (sync) * from {SCHEMA}.runs order by sync, run_id desc;
"""

CURRENT_STATE = f"""select to_regclass('{SCHEMA}.syncs') is not null and to_regclass('{SCHEMA}.sync_schemas') is not null
    and exists (select 1 from pg_attribute where attrelid = to_regclass('{SCHEMA}.latest_runs') and attname = 'healed')"""


def ensure_state_schema(conn: Any) -> None:
    """Create the state tables if needed (serialized: concurrent first runs do not race)."""
    present = conn.execute(CURRENT_STATE).fetchone()
    if present and present[0]:
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(f"select pg_advisory_xact_lock({DDL_LOCK})")
        cur.execute(STATE_DDL)


def state_schema_exists(conn: Any) -> bool:
    """The current state schema is there (a dry run never creates it, nor upgrades an older one)."""
    row = conn.execute(CURRENT_STATE).fetchone()
    return bool(row and row[0])


def tables_of(sync: str) -> tuple[str, str]:
    """(rows table, doubt table) of a sync: names derived from its name, whatever its length."""
    digest = hashlib.sha1(sync.encode()).hexdigest()[:16]
    return f"rows_{digest}", f"doubt_{digest}"


# ---------------------------------------------------------------- CSV COPY (psycopg)


def csv_bytes(table: pa.Table | pa.RecordBatch) -> bytes:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
    return buffer.getvalue()


def copy_batches(cur: Any, table: str, columns: list[str], batches: Iterable[pa.RecordBatch]) -> int:
    """One COPY of every batch into ``table`` (psycopg, CSV); returns the rows sent. A helper
    thread encodes the next batch while this one is sent."""
    rows = 0
    with cur.copy(f"copy {table} ({', '.join(columns)}) from stdin (format csv)") as copy:
        encoded = read_ahead(((b.num_rows, csv_bytes(b)) for b in batches), name="reverse_etl-csv")
        with contextlib.closing(encoded):
            for count, data in encoded:
                rows += count
                copy.write(data)
    return rows


# ---------------------------------------------------------------- one sync's state


class StateStore:
    """One sync's state: on the run's Postgres session (``pg``, in the attempt's transaction)
    and in the local cache. ``dry_run`` reads and writes nothing anywhere."""

    def __init__(
        self, pg: Postgres, records: Records, spec: SyncSpec, run_id: int | None, cache_dir: Path, dry_run: bool = False
    ) -> None:
        self.pg = pg
        self.records = records
        self.con = records.con
        self.sync = spec.name
        self.mode = spec.mode
        self.run_id = run_id or 0
        self.dry_run = dry_run
        self.rows_table, self.doubt_table = tables_of(spec.name)
        self.cache_file = cache_dir / f"{self.rows_table}.duckdb"
        self.recorded = bool(
            pg.scalar(
                f"select to_regclass('{SCHEMA}.syncs') is not null and to_regclass('{SCHEMA}.sync_schemas') is not null"
            )
        )
        self.version: int | None = None  # None: the sync never committed a state
        self.live = self.logged = 0
        self.identity: dict[str, str] = records.identity_types()
        self._doubts = 0
        self._cache_attached = False
        self._gone: str | None = None
        self._prepared: Path | None = None  # a first state's cache file, waiting for the commit
        self.gone_query: str | None = None  # set by the engine for the modes that delete (StateView)

    # ---------------------------------------------------------------- names

    def _rows(self) -> str:
        return f"{SCHEMA}.{quote(self.rows_table)}"

    def _doubt(self) -> str:
        return f"{SCHEMA}.{quote(self.doubt_table)}"

    def _ids(self, prefix: str = "") -> str:
        return ", ".join(f"{prefix}{quote(c)}" for c in self.identity)

    # ---------------------------------------------------------------- reading

    def load(self, full_resync: bool = False) -> int:
        """Make the state the records classify against (see the module docstring); returns the
        records the state says the destination holds."""
        row = None
        if self.recorded:
            name = literal(self.sync)
            rows = self.pg.query(f"select version, live, logged, identity from {SCHEMA}.syncs where sync = {name}")
            row = rows[0] if rows else None
        if row is not None:
            self.version, self.live, self.logged = int(row[0]), int(row[1]), int(row[2])
            recorded = [c for c, _ in json.loads(row[3])] if isinstance(row[3], str) else [c for c, _ in row[3]]
            if recorded != list(self.identity):
                raise_identity_changed(self.sync, recorded, list(self.identity))
        if self.version is None:
            return 0  # nothing recorded: the empty state the records start with
        current = self._current_state()
        self._doubts = int(self.pg.scalar(f"select count(*) from {self._doubt()}") or 0)
        fingerprint = "null::bigint" if full_resync else "s.fingerprint"
        if self._doubts:
            self.con.execute(
                f"create or replace temp table doubt as select distinct {self._ids()} "
                f"from {self.pg.relation(SCHEMA, self.doubt_table)}"
            )
            doubt = "temp.doubt"
            on = " and ".join(f"d.{quote(c)} = s.{quote(c)}" for c in self.identity)
            relation = f"""(select {self._ids("s.")},
                               case when d.{quote(next(iter(self.identity)))} is null then {fingerprint} end as fingerprint,
                               true as recorded
                            from {current} s left join {doubt} d on {on}
                            union all
                            select {self._ids("d.")}, null::bigint, false from {doubt} d anti join {current} s on {on})"""
        else:
            relation = f"(select {self._ids()}, {fingerprint.removeprefix('s.')} as fingerprint, true as recorded from {current})"
        self.records.use_state(relation)
        return self.live

    def _current_state(self) -> str:
        """The state as of ``version``: the cache when it reflects that version, else the log,
        read once (the cache rebuilt from it on a real run; a dry run keeps it in the scratch)."""
        if self.cache_file.exists() and self._attach_cache() and self._cache_version() == self.version:
            return f"{CACHE_ALIAS}.state"
        log.info("sync %s: reading its state from Postgres (the local cache is missing or stale)", self.sync)
        latest = f"""select {self._ids()}, arg_max(struct_pack(f := fingerprint), seq).f as fingerprint
                     from {self.pg.relation(SCHEMA, self.rows_table)} group by all"""
        current = f"select * from ({latest}) where fingerprint is not null"
        if self.dry_run:
            self.con.execute(f"create or replace temp table state as {current}")
            return "temp.state"
        self._detach_cache()
        _remove_duckdb_file(self.cache_file)
        self._attach_cache()
        self.con.execute(f"create table {CACHE_ALIAS}.state as {current}")
        self.con.execute(f"create table {CACHE_ALIAS}.meta (version bigint)")
        self.con.execute(f"insert into {CACHE_ALIAS}.meta values ({int(self.version or 0)})")
        return f"{CACHE_ALIAS}.state"

    def _attach_cache(self) -> bool:
        if self._cache_attached:
            return True
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        mode = " (read_only)" if self.dry_run else ""
        try:
            self.con.execute(f"attach {literal(str(self.cache_file))} as {CACHE_ALIAS}{mode}")
        except Exception as exc:  # a cache is only ever a cache: a broken file is rebuilt
            log.warning("sync %s: local state cache %s unusable (%s); rebuilding it", self.sync, self.cache_file, exc)
            if self.dry_run:
                return False
            self.cache_file.unlink(missing_ok=True)
            self.con.execute(f"attach {literal(str(self.cache_file))} as {CACHE_ALIAS}")
        self._cache_attached = True
        return True

    def _detach_cache(self) -> None:
        if self._cache_attached:
            self.con.execute(f"detach {CACHE_ALIAS}")
            self._cache_attached = False

    def _cache_version(self) -> int | None:
        try:
            row = self.con.execute(f"select max(version) from {CACHE_ALIAS}.meta").fetchone()
        except Exception:
            return None
        return int(row[0]) if row and row[0] is not None else None

    def close(self) -> None:
        try:
            self._detach_cache()
        except Exception as exc:
            log.debug("detaching the cache failed: %s", exc)
        if self._prepared is not None:  # the commit never came: the file never was the state
            _remove_duckdb_file(self._prepared)
            self._prepared = None

    # ---------------------------------------------------------------- the sync's tables

    def _ensure_tables(self) -> None:
        """The sync's rows and doubt tables and its ``syncs`` row, created on its first commit."""
        if self.version is not None:
            return
        arrow = self.con.execute(f"select {self._ids()} from {EMPTY_STATE} limit 0").arrow().schema
        columns = ", ".join(f"{quote(f.name)} {postgres_type(f.type) or 'text'}" for f in arrow)
        identity = json.dumps([[f.name, postgres_type(f.type) or "text"] for f in arrow])
        self.pg.execute(
            f"create table if not exists {self._rows()} ({columns}, fingerprint bigint, seq bigint not null)"
        )
        self.pg.execute(f"create table if not exists {self._doubt()} ({columns}, run_id bigint)")
        self.pg.execute(
            f"""insert into {SCHEMA}.syncs (sync, rows_table, doubt_table, identity)
                values ({literal(self.sync)}, {literal(self.rows_table)}, {literal(self.doubt_table)},
                        {literal(identity)}::jsonb)
                on conflict (sync) do nothing"""
        )
        self.pg.refresh_catalog()
        self.version = 0

    # ---------------------------------------------------------------- write-ahead

    def mark_in_doubt(self, side: Any, kinds: tuple[int, ...]) -> int:
        """Commit, on ``side`` (a psycopg connection of its own, autocommit), the identities of
        the records about to be sent to a destination outside this transaction."""
        if self.dry_run:
            return 0
        if self.version is None:  # the doubt table must exist before the run's own transaction
            self._create_on_side(side)
        run = pa.scalar(self.run_id, pa.int64())
        batches = self.records._stream(self.records.identity_sql(kinds))
        with side.cursor() as cur:
            return copy_batches(
                cur,
                self._doubt(),
                [*[quote(c) for c in self.identity], "run_id"],
                (b.append_column("run_id", pa.repeat(run, b.num_rows)) for b in batches),
            )

    def _create_on_side(self, side: Any) -> None:
        arrow = self.con.execute(f"select {self._ids()} from {EMPTY_STATE} limit 0").arrow().schema
        columns = ", ".join(f"{quote(f.name)} {postgres_type(f.type) or 'text'}" for f in arrow)
        side.execute(f"create table if not exists {self._doubt()} ({columns}, run_id bigint)")
        self.pg.refresh_catalog()

    # ---------------------------------------------------------------- writing (the run's transaction)

    def remember(self, gone: str | None) -> None:
        """After the writes: append what the state must now say (records sent, and for
        insert_only the new ones only; ``gone``: a DuckDB query of identities now gone, appended
        as tombstones), clear the doubts, bump the version. Rewrites the log instead when it
        has grown past ``REWRITE_FACTOR`` times the live records."""
        if self.dry_run:
            return
        self._ensure_tables()
        kinds = (NEW,) if self.mode == "insert_only" else SENT
        new = self._count(f"select count(*) from {self.records.classified} where __rt_change = {NEW}")
        gone_count = self._count(f"select count(*) from ({gone})") if gone else 0
        live = self.live + new - gone_count
        appended = self._count(
            f"select count(*) from {self.records.classified} where __rt_change in ({', '.join(map(str, kinds))})"
        )
        rows = self.pg.relation(SCHEMA, self.rows_table)
        if self.logged + appended + gone_count > REWRITE_FACTOR * max(live, 1) + 10_000:
            self.pg.execute(f"truncate {self._rows()}")
            self.con.execute(f"insert into {rows} select *, {self.run_id} from ({self._new_state_sql(gone)})")
            logged = live
        else:
            self.con.execute(f"insert into {rows} select *, {self.run_id} from ({self.records.state_rows_sql(kinds)})")
            if gone:
                self.con.execute(f"insert into {rows} select *, null::bigint, {self.run_id} from ({gone})")
            logged = self.logged + appended + gone_count
        self.pg.execute(f"truncate {self._doubt()}")  # every mark of this run and of killed ones
        self.pg.execute(
            f"""update {SCHEMA}.syncs set version = version + 1, live = {live}, logged = {logged}
                where sync = {literal(self.sync)}"""
        )
        self.version = (self.version or 0) + 1
        self.live, self.logged = live, logged
        self._gone = gone

    def _count(self, sql: str) -> int:
        row = self.con.execute(sql).fetchone()
        return int(row[0]) if row else 0

    def _new_state_sql(self, gone: str | None) -> str:
        """The state after this run: the previous one, updated by what was sent, without what is gone."""
        kinds = (NEW,) if self.mode == "insert_only" else SENT
        sent = self.records.state_rows_sql(kinds)
        on = " and ".join(f"s.{quote(c)} = c.{quote(c)}" for c in self.identity)
        previous = f"(select {self._ids()}, fingerprint from {self.records.state} where recorded)"
        merged = f"""select {", ".join(f"coalesce(c.{quote(x)}, s.{quote(x)}) as {quote(x)}" for x in self.identity)},
                            coalesce(c.fingerprint, s.fingerprint) as fingerprint
                     from {previous} s full outer join ({sent}) c on {on}"""
        if gone:
            on_gone = " and ".join(f"m.{quote(c)} = g.{quote(c)}" for c in self.identity)
            merged = f"select m.* from ({merged}) m anti join ({gone}) g on {on_gone}"
        return merged

    def prepare_cache(self, con: Any) -> None:
        """Before the commit, after ``remember``: a sync's first state (what it sends) written
        whole, with the version it will have, into a file beside the cache (``con``: a cursor
        outside the run's transaction). ``update_cache`` puts it in the cache's place once the
        commit is in; ``close`` removes it if the commit never came. Later states are updated
        in place after the commit instead (a few rows, not a copy of them all)."""
        if self.dry_run or self.version is None or not self.records.first_state:
            return
        prepared = self.cache_file.with_suffix(".next.duckdb")
        _remove_duckdb_file(prepared)
        prepared.parent.mkdir(parents=True, exist_ok=True)
        kinds = (NEW,) if self.mode == "insert_only" else SENT
        con.execute(f"attach {literal(str(prepared))} as {CACHE_ALIAS}_next")
        try:
            con.execute(f"create table {CACHE_ALIAS}_next.state as {self.records.state_rows_sql(kinds)}")
            con.execute(f"create table {CACHE_ALIAS}_next.meta as select {int(self.version)}::bigint as version")
        finally:
            con.execute(f"detach {CACHE_ALIAS}_next")
        self._prepared = prepared

    def update_cache(self) -> None:
        """After the commit: the cache becomes the state just committed, by applying what this
        run changed (a failure here only leaves the cache stale: the next run rebuilds it)."""
        if self.dry_run or self.version is None:
            return
        if self._prepared is not None:  # a first state, written before the commit
            try:
                self._detach_cache()
                _remove_duckdb_file(self.cache_file)
                self._prepared.replace(self.cache_file)
            except Exception as exc:
                log.warning("sync %s: could not put the local state cache in place (%s)", self.sync, exc)
                self.drop_cache()
            self._prepared = None
            return
        try:
            if not self._attach_cache():
                return
            cache = f"{CACHE_ALIAS}.state"
            kinds = (NEW,) if self.mode == "insert_only" else SENT
            fresh = self.records.first_state or self._cache_version() is None
            if self.records.first_state:  # the sync's first state: what it sent
                self.con.execute(f"create or replace table {cache} as {self.records.state_rows_sql(kinds)}")
            elif fresh:  # the first state on this machine: written whole (via a copy: it may read the cache)
                self.con.execute(f"create or replace temp table next_state as {self._new_state_sql(self._gone)}")
                self.con.execute(f"create or replace table {cache} as select * from temp.next_state")
            else:  # what this run changed, and nothing else
                if self._gone:  # (computed from the cache itself: taken before the cache changes)
                    self.con.execute(f"create or replace temp table gone_now as {self._gone}")
                on = " and ".join(f"s.{quote(c)} = c.{quote(c)}" for c in self.identity)
                updated = tuple(k for k in kinds if k != NEW)
                if updated:
                    changed = self.records.state_rows_sql(updated)
                    self.con.execute(f"update {cache} s set fingerprint = c.fingerprint from ({changed}) c where {on}")
                self.con.execute(f"insert into {cache} {self.records.state_rows_sql((NEW,))}")
                if self._gone:
                    on_gone = " and ".join(f"s.{quote(c)} = g.{quote(c)}" for c in self.identity)
                    self.con.execute(f"delete from {cache} s using temp.gone_now g where {on_gone}")
            self.con.execute(f"create or replace table {CACHE_ALIAS}.meta (version bigint)")
            self.con.execute(f"insert into {CACHE_ALIAS}.meta values ({int(self.version)})")
        except Exception as exc:
            log.warning(
                "sync %s: could not update the local state cache (%s); the next run rebuilds it", self.sync, exc
            )
            self.drop_cache()

    def drop_cache(self) -> None:
        self._detach_cache()
        _remove_duckdb_file(self.cache_file)

    # ---------------------------------------------------------------- what the model dropped (StateView)

    def gone_sql(self) -> str | None:
        return self.gone_query

    def gone(self) -> Iterator[pa.RecordBatch]:
        if self.gone_query is None:
            return iter(())
        return self.records._stream(self.gone_query)

    # ---------------------------------------------------------------- columns sent

    def recorded_columns(self) -> dict[str, str] | None:
        if not self.recorded:
            return None
        row = self.pg.query(f"select columns::text from {SCHEMA}.sync_schemas where sync = {literal(self.sync)}")
        return dict(json.loads(row[0][0])) if row else None

    def record_columns(self, columns: dict[str, str]) -> None:
        if self.dry_run:
            return
        self.pg.execute(
            f"""insert into {SCHEMA}.sync_schemas (sync, columns) values ({literal(self.sync)}, {literal(json.dumps(columns))}::jsonb)
                on conflict (sync) do update set columns = excluded.columns, recorded_at = now()
                where {SCHEMA}.sync_schemas.columns is distinct from excluded.columns"""
        )

    # ---------------------------------------------------------------- rejected rows

    def reject(self) -> None:
        """Keep the run's rejected rows where users can query them."""
        if self.dry_run:
            return
        self.con.execute(
            f"""insert into {self.pg.relation(SCHEMA, "rejected_rows")}
                select {self.run_id}, {literal(self.sync)}, {ROW_KEY}, {REASON}, {ROW} from ({self.records.rejected_sql()})"""
        )

    def prune_rejected(self) -> None:
        """Keep the rejected rows of the last runs of this sync only."""
        if self.dry_run:
            return
        sync = literal(self.sync)
        self.pg.execute(
            f"""delete from {SCHEMA}.rejected_rows where sync = {sync} and run_id < coalesce(
                    (select min(run_id) from (select run_id from {SCHEMA}.runs where sync = {sync}
                                              order by run_id desc limit {KEEP_REJECTED_RUNS}) recent), 0)"""
        )

    # ---------------------------------------------------------------- replace: refreshes owed

    def pending_refresh(self) -> list[str]:
        if not self.recorded:
            return []
        rows = self.pg.query(f"select models from {SCHEMA}.pending_refreshes where sync = {literal(self.sync)}")
        return list(rows[0][0]) if rows else []

    def owe_refresh(self, models: list[str]) -> None:
        array = "array[" + ", ".join(literal(m) for m in models) + "]::text[]"
        self.pg.execute(
            f"""insert into {SCHEMA}.pending_refreshes (sync, models) values ({literal(self.sync)}, {array})
                on conflict (sync) do update set models = excluded.models, since = now()"""
        )


def _remove_duckdb_file(path: Path) -> None:
    for p in (path, path.with_suffix(path.suffix + ".wal")):
        p.unlink(missing_ok=True)


def raise_identity_changed(sync: str, was: list[str], now: list[str]) -> None:
    from reverse_etl.errors import SyncError

    raise SyncError(
        f"sync {sync}: its records were identified by {', '.join(was)} and now by {', '.join(now)}",
        hint="a new key is a new sync: give it a new name (or drop the destination and its state)",
    )


def clear_pending_refresh(conn: Any, sync: str) -> None:
    conn.execute(f"delete from {SCHEMA}.pending_refreshes where sync = %s", (sync,))


def forget_sync(conn: Any, sync: str, cache_dir: Path | None = None) -> None:
    """Drop everything the state knows of ``sync`` (psycopg connection; tests and benchmarks)."""
    rows_table, doubt_table = tables_of(sync)
    if state_schema_exists(conn):
        conn.execute(f"drop table if exists {SCHEMA}.{quote(rows_table)}")
        conn.execute(f"drop table if exists {SCHEMA}.{quote(doubt_table)}")
        conn.execute(f"delete from {SCHEMA}.syncs where sync = %s", (sync,))
        conn.execute(f"delete from {SCHEMA}.sync_schemas where sync = %s", (sync,))
    if cache_dir is not None:
        shutil.rmtree(cache_dir / f"{rows_table}.duckdb", ignore_errors=True)
        (cache_dir / f"{rows_table}.duckdb").unlink(missing_ok=True)


__all__ = ["CHANGED", "HEALED", "SCHEMA", "StateStore", "ensure_state_schema"]
