"""The ``reverse_etl`` schema of the state's Postgres: its tables, its version, its migrations.

``ensure_schema`` runs before every run (on the history's connection, serialized by an advisory
lock so that concurrent first runs do not race): it brings an older schema up to ``VERSION``
through the migrations below, and recreates what a person dropped (a table, a column), saying
so. It is cheap when everything is in place: one catalog query.

Version 4 (this one): ``syncs.cursor`` and ``since_full`` (change detection by a cursor column).
Version 3: ``runs.skipped`` (records a write policy kept from the destination).
Version 2: the log of each sync is ordered by the sync's own ``version`` (no longer
by run ids, which restart when someone truncates ``runs``); ``syncs`` gains ``epoch`` (the
identity of one history of the sync's state: a cache or a state rebuilt under another epoch is
never trusted) and ``digest`` (the destination's summary after the last commit);
``sync_schemas`` keeps its columns in order; ``rejected_rows`` no longer references ``runs``.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

SCHEMA = "reverse_etl"
VERSION = 4
DDL_LOCK = "hashtextextended('reverse_etl:ddl', 0)"

TABLES_DDL = f"""
create table if not exists {SCHEMA}.syncs (
    sync text primary key,
    rows_table text not null,
    doubt_table text not null,
    identity jsonb not null,
    version bigint not null default 0,
    live bigint not null default 0,
    logged bigint not null default 0
);
alter table {SCHEMA}.syncs add column if not exists epoch text;
alter table {SCHEMA}.syncs add column if not exists digest text;
alter table {SCHEMA}.syncs add column if not exists cursor text;
alter table {SCHEMA}.syncs add column if not exists since_full integer not null default 0;
create table if not exists {SCHEMA}.rejected_rows (
    run_id bigint not null,
    sync text not null,
    row_key jsonb not null,
    reason text not null,
    row_data jsonb not null
);
alter table {SCHEMA}.rejected_rows drop constraint if exists rejected_rows_run_id_fkey;
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
create table if not exists {SCHEMA}.state_version (
    version integer not null,
    migrated_at timestamptz not null default now()
);
"""

# the log of every sync used run ids as its order: from now on its sync's version, which must
# then start above every run id already in its log
MIGRATE_1_TO_2 = f"""
do $$
declare s record; top bigint;
begin
  for s in select sync, rows_table from {SCHEMA}.syncs loop
    if to_regclass(format('%I.%I', '{SCHEMA}', s.rows_table)) is not null then
      execute format('select max(seq) from %I.%I', '{SCHEMA}', s.rows_table) into top;
      update {SCHEMA}.syncs set version = greatest(version, coalesce(top, 0)) where sync = s.sync;
    end if;
  end loop;
end $$;
"""

# every table (and view) of this version, with its columns
RUN_COLUMNS = [
    "run_id",
    "sync",
    "mode",
    "destination",
    "status",
    "started_at",
    "ended_at",
    "attempts",
    "read",
    "inserted",
    "updated",
    "unchanged",
    "deleted",
    "rejected",
    "error",
    "healed",
    "checked",
    "notes",
]
EXPECTED = {
    "runs": RUN_COLUMNS,
    "latest_runs": RUN_COLUMNS,
    "syncs": [
        "sync",
        "rows_table",
        "doubt_table",
        "identity",
        "version",
        "live",
        "logged",
        "epoch",
        "digest",
        "cursor",
        "since_full",
    ],
    "rejected_rows": ["run_id", "sync", "row_key", "reason", "row_data"],
    "pending_refreshes": ["models", "since", "sync"],
    "sync_schemas": ["sync", "columns", "recorded_at"],
    "state_version": ["version", "migrated_at"],
}


def schema_version(conn: Any) -> int | None:
    """The schema's version when it is whole; None when a table or column is missing."""
    found = conn.execute(
        """select c.relname::text, a.attname::text from pg_class c
           join pg_namespace n on n.oid = c.relnamespace and n.nspname = %s
           join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
           where c.relname = any(%s)""",
        (SCHEMA, list(EXPECTED)),
    ).fetchall()
    present = {(t, c) for t, c in found}
    if any((table, column) not in present for table, columns in EXPECTED.items() for column in columns):
        return None
    row = conn.execute(f"select coalesce(max(version), 0) from {SCHEMA}.state_version").fetchone()
    return int(row[0]) if row else None


def ensure_schema(conn: Any) -> list[str]:
    """Create, migrate or repair the schema (``conn``: psycopg, autocommit); returns what was
    repaired or migrated, for the run to say."""
    if schema_version(conn) == VERSION:
        return []
    from reverse_etl.runs import RUNS_DDL

    done: list[str] = []
    with conn.transaction():
        conn.execute(f"select pg_advisory_xact_lock({DDL_LOCK})")
        if schema_version(conn) == VERSION:  # another run did it while this one waited
            return []
        existed = conn.execute(f"select to_regclass('{SCHEMA}.syncs') is not null").fetchone()[0]
        tables = {
            name: conn.execute(f"select to_regclass('{SCHEMA}.{name}') is not null").fetchone()[0]
            for name in ("runs", "syncs", "rejected_rows", "pending_refreshes", "sync_schemas", "state_version")
        }
        had_version = (
            tables["state_version"]
            and conn.execute(f"select coalesce(max(version), 0) from {SCHEMA}.state_version").fetchone()[0]
        )
        conn.execute(f"create schema if not exists {SCHEMA}")
        conn.execute(RUNS_DDL)
        conn.execute(TABLES_DDL)
        if existed and not had_version:  # a state written before versions were recorded
            conn.execute(MIGRATE_1_TO_2)
            done.append(f"the state schema was migrated to version {VERSION}")
        elif had_version and had_version < VERSION:  # columns added since (the DDL above added them)
            done.append(f"the state schema was migrated from version {had_version} to {VERSION}")
        elif had_version:
            missing = [name for name, there in tables.items() if not there]
            if missing:
                done.append(f"state table(s) {', '.join(f'{SCHEMA}.{m}' for m in missing)} were missing: recreated")
            else:
                done.append("columns missing from the state tables were recreated")
            if not tables["runs"] and tables["rejected_rows"]:  # their run ids now mean other runs
                conn.execute(f"truncate {SCHEMA}.rejected_rows")
        conn.execute(f"delete from {SCHEMA}.state_version")
        conn.execute(f"insert into {SCHEMA}.state_version (version) values ({VERSION})")
    for line in done:
        log.warning("%s", line)
    return done


def state_schema_exists(conn: Any) -> bool:
    """The state schema is there (a dry run never creates it)."""
    row = conn.execute(f"select to_regclass('{SCHEMA}.syncs') is not null").fetchone()
    return bool(row and row[0])
