"""One sync's state: a cache of its destination that never claims more than the destination holds.

It lives in the ``reverse_etl`` schema of the state's Postgres, one store per concern:

- ``schema``: the tables, their version and migrations (``ensure_schema``);
- ``registry``: the ``syncs`` row (where the state is, its version, epoch and the destination's
  digest);
- ``log``: the records the sync wrote, as an append-only log;
- ``cache``: the current state in a local DuckDB file, so that a run reads no state over the
  network when nothing changed elsewhere;
- ``doubts``: the write-ahead marks of destinations outside the state's transaction;
- ``rejects``: rows a run did not write, with the reason;
- ``columns``: the model columns last sent, and the refreshes a replace sync owes.

``SyncState`` composes them for one run. It checks itself first (``check``): a missing or
damaged part of its own schema is repaired (the ``syncs`` row rebuilt from the log, a missing
doubt table recreated and every record sent again), and a sync whose records are lost (its log
dropped) is re-owned from the destination by the engine, counted and said: never a sync that
fails for ever, never a silent orphan. Everything it writes during a run commits in the run's
transaction (``remember``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reverse_etl.destinations.base import Known
from reverse_etl.errors import SyncError
from reverse_etl.pg import PgSession
from reverse_etl.records import CHANGED, HEALED, NEW, SENT, Plan, Records, q
from reverse_etl.state import columns as sent_columns
from reverse_etl.state import registry, rejects
from reverse_etl.state.cache import LocalCache
from reverse_etl.state.doubts import Doubts
from reverse_etl.state.log import REWRITE_FACTOR, StateLog
from reverse_etl.state.registry import SyncRow, tables_of
from reverse_etl.state.schema import SCHEMA, ensure_schema, state_schema_exists
from roundtrip.core.sql import literal, postgres_type

log = logging.getLogger(__name__)

__all__ = ["SCHEMA", "Checked", "SyncState", "ensure_schema", "forget_sync", "state_schema_exists", "tables_of"]


def forget_sync(conn: Any, sync: str, cache_dir: Path | None = None) -> None:
    """Everything the state knows of ``sync`` dropped, its history and local cache too, so that
    its next run is a first run (psycopg connection; tests and benchmarks)."""
    registry.forget(conn, sync)
    if conn.execute(f"select to_regclass('{SCHEMA}.runs') is not null").fetchone()[0]:
        conn.execute(f"delete from {SCHEMA}.runs where sync = %s", (sync,))
    if cache_dir is not None:  # its cache of every state home (see cache_home)
        for path in cache_dir.glob(f"{tables_of(sync)[0]}.*"):
            path.unlink(missing_ok=True)


def cache_home(pg: PgSession) -> str:
    """Which database a local cache mirrors the state of: the server's system identifier and the
    database's OID, which survive the state's schema being dropped (a cache of the same database
    is evidence that its state was lost) and tell another server's database, or another database
    of the same server, from it (its cache is not: a sync pointed at a new database starts anew)."""
    allowed = pg.scalar("select has_function_privilege('pg_control_system()', 'execute')")
    server = (
        pg.scalar("select system_identifier::text from pg_control_system()")
        if allowed
        else pg.scalar("select coalesce(inet_server_addr()::text, 'local') || ':' || current_setting('port')")
    )
    database = pg.scalar("select oid::text from pg_database where datname = current_database()")
    return hashlib.sha1(f"{server}:{database}".encode()).hexdigest()[:12]


@dataclass
class Checked:
    """What the state's self-check found (``SyncState.check``)."""

    row: SyncRow | None
    lost: bool = False  # the sync had a state and its records are gone: re-own the destination
    resend: bool = False  # write-ahead marks may be lost: send every record again
    repairs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Remembered:
    """What the commit will say of the state (for the cache, after it)."""

    version: int
    epoch: str
    first: bool  # the sync had no committed state: the cache is written whole


class SyncState:
    def __init__(
        self,
        pg: PgSession,
        con: Any,
        sync: str,
        records: Records,
        cache_dir: Path,
        dry_run: bool = False,
    ) -> None:
        self.pg = pg
        self.con = con
        self.sync = sync
        self.records = records
        self.dry_run = dry_run
        self.identity_types = records.identity_types()
        self.identity = list(self.identity_types)
        rows_table, doubt_table = tables_of(sync)
        self.log = StateLog(pg, rows_table, self.identity)
        self.doubts = Doubts(pg, doubt_table, self.identity)
        self.cache = LocalCache(con, cache_dir / f"{rows_table}.{cache_home(pg)}.duckdb", sync, read_only=dry_run)
        self.checked = Checked(None)
        self.known: Known | None = None
        self.recorded = state_schema_exists_pg(pg)

    # ---------------------------------------------------------------- the self-check

    def identity_pg(self) -> list[tuple[str, str]]:
        ids = ", ".join(f"{expr} as {q(name)}" for name, expr in self.records.shape.identity.items())
        schema = self.con.execute(f"select {ids} from {self.records.projected()} limit 0").arrow().schema
        return [(f.name, postgres_type(f.type) or "text") for f in schema]

    def check(self) -> Checked:
        """Find (and, in a real run, repair) what a person or a crash did to this sync's state."""
        if not self.recorded:
            self.checked = Checked(None, lost=self._had_a_state())
            return self.checked
        row = registry.read(self.pg, self.sync)
        checked = Checked(row)
        log_ok = self.log.exists() and self.log.columns() == [*self.identity, "fingerprint", "seq"]
        if row is not None and [c for c, _ in row.identity] != self.identity:
            raise SyncError(
                f"sync {self.sync}: its records were identified by {', '.join(c for c, _ in row.identity)} "
                f"and now by {', '.join(self.identity)}",
                hint="a new key is a new sync: give it a new name (or drop the destination and its state)",
            )
        if row is not None and log_ok:
            _, logged = self.log.extent()
            if logged != row.logged:
                log_ok = False  # truncated, rows deleted or added by hand: it no longer says what was sent
        if row is not None and not log_ok:
            checked.lost = True
            checked.repairs.append(f"its state log {SCHEMA}.{self.log.table} is missing or damaged")
        elif row is None and log_ok:
            top, live, logged = self.log.summary()
            checked.row = registry.SyncRow(
                self.sync,
                self.log.table,
                self.doubts.table,
                self.identity_pg(),
                top,
                live,
                logged,
                registry.new_epoch(),
                None,
            )
            checked.repairs.append(f"its row in {SCHEMA}.syncs was missing: rebuilt from its log ({live:,} records)")
            if not self.dry_run:
                registry.write(self.pg, checked.row)
        elif row is None:
            checked.lost = self._had_a_state()
            if checked.lost:
                checked.repairs.append("its state is gone (the schema or its tables were dropped)")
        if checked.row is not None and not checked.lost and not self.doubts.exists():
            checked.resend = True
            checked.repairs.append(f"its write-ahead table {SCHEMA}.{self.doubts.table} was missing: recreated")
            if not self.dry_run:
                self.doubts.create(self.identity_pg())
        if checked.row is not None and checked.lost and not self.dry_run:
            self._drop_damaged_log()
        for line in checked.repairs:
            log.warning("sync %s: %s", self.sync, line)
        self.checked = checked
        return checked

    def _had_a_state(self) -> bool:
        """Evidence that this sync committed before: its run history, or its local cache."""
        if self.cache.path.exists():
            return True
        if not self.recorded or not self.pg.exists(SCHEMA, "runs"):
            return False
        return bool(
            self.pg.scalar(
                f"""select exists (select 1 from {SCHEMA}.runs where sync = {literal(self.sync)}
                                   and status in ('succeeded', 'succeeded_with_rejects', 'committed'))"""
            )
        )

    def _drop_damaged_log(self) -> None:
        if self.log.exists():
            self.pg.execute(f"alter table {self.log.relation} rename to {q(self.log.table + '_damaged')}")
            self.pg.refresh_catalog()

    # ---------------------------------------------------------------- loading

    def empty(self) -> str:
        ids = ", ".join(f"{expr} as {q(name)}" for name, expr in self.records.shape.identity.items())
        empty = self.records.table("rt_empty_state")
        self.con.execute(
            f"""create or replace table {empty} as select {ids}, null::bigint as fingerprint,
                true as recorded from {self.records.projected()} limit 0"""
        )
        return empty

    def load(self, full_resync: bool, columns: dict[str, str] | None) -> Known:
        """The state the records classify against (see the module docstring)."""
        row = self.checked.row
        if row is None or self.checked.lost:
            self.known = Known(state=self.empty(), owned=0, digest=None, columns=columns)
            return self.known
        stamp = self.cache.stamp()
        if stamp == (row.epoch, row.version):
            current = self.cache.state
        else:
            log.info("sync %s: reading its state from Postgres (the local cache is missing or stale)", self.sync)
            top = self.log.top()
            if top > row.version:  # the version was set back by hand: the log's order must go on
                self.checked.repairs.append(f"its version in {SCHEMA}.syncs was behind its log: set to {top}")
                log.warning("sync %s: %s", self.sync, self.checked.repairs[-1])
                row = replace(row, version=top, epoch=registry.new_epoch())
                self.checked.row = row
                if not self.dry_run:
                    registry.write(self.pg, row)
            current = self.cache.rebuild(self.log.current_sql(), row.epoch, row.version, self.records.table("rt_state"))
        doubts = self.doubts.count() if self.doubts.exists() else 0
        unknown = full_resync or self.checked.resend
        fingerprint = "null::bigint" if unknown else "s.fingerprint"
        ids = ", ".join(q(c) for c in self.identity)
        if doubts:
            doubt = self.records.table("rt_doubt")
            self.con.execute(f"create or replace table {doubt} as select * from {self.doubts.relation_in_duckdb()}")
            on = " and ".join(f"d.{q(c)} = s.{q(c)}" for c in self.identity)
            s_ids = ", ".join(f"s.{q(c)}" for c in self.identity)
            d_ids = ", ".join(f"d.{q(c)}" for c in self.identity)
            relation = f"""(select {s_ids}, case when d.{q(self.identity[0])} is null then {fingerprint} end as fingerprint,
                                   true as recorded
                            from {current} s left join {doubt} d on {on}
                            union all
                            select {d_ids}, null::bigint, false from {doubt} d anti join {current} s on {on})"""
        else:
            relation = (
                f"(select {ids}, {fingerprint.removeprefix('s.')} as fingerprint, true as recorded from {current})"
            )
        owned = int(self.con.execute(f"select count(*) from {current}").fetchone()[0])
        self.known = Known(
            state=relation, owned=owned, digest=row.digest, columns=columns, retired=f"({self.log.retired_sql()})"
        )
        return self.known

    def reown(self, held: str | None, columns: dict[str, str] | None) -> Known:
        """A lost state taken over from what the destination holds (``held``: its identities):
        every such record is the sync's, its content unknown, so each is sent again."""
        if held is None:
            return self.load(False, columns)
        ids = ", ".join(q(c) for c in self.identity)
        reowned = self.records.table("rt_reowned")
        self.con.execute(
            f"create or replace table {reowned} as select distinct {ids}, null::bigint as fingerprint, "
            f"true as recorded from {held}"
        )
        owned = self.records.count(f"select * from {reowned}")
        self.known = Known(state=reowned, owned=owned, digest=None, columns=columns)
        return self.known

    def recorded_columns(self) -> tuple[dict[str, str] | None, bool]:
        if not self.recorded:
            return None, True
        return sent_columns.recorded(self.pg, self.sync)

    # ---------------------------------------------------------------- the write-ahead

    def mark_in_doubt(self, side: Any, run_id: int, batches: Any) -> int:
        """Commit, on ``side`` (psycopg, autocommit), the identities about to be sent."""
        if self.dry_run:
            return 0
        if not self.doubts.exists():  # it must exist before the run's own transaction commits
            self.doubts.create(self.identity_pg(), side)
        return self.doubts.mark(side, run_id, batches)

    # ---------------------------------------------------------------- the run's transaction

    def remember(
        self,
        plan: Plan,
        gone: str | None,
        digest: str | None,
        columns: dict[str, str],
        insert_only: bool,
        kept: str | None = None,
        absent: str | None = None,
        cursor: tuple[str | None, bool] = (None, False),
    ) -> Remembered:
        """After the writes, in the run's transaction: what the state must now say. ``kept``
        and ``absent``: records a write policy kept from the destination (another version is
        there: the state keeps what it said; none is: the state forgets them)."""
        known = self.known
        assert known is not None
        self._kept, self._absent = kept, absent
        gone = self._gone_with_absent(gone)
        row = self.checked.row if not self.checked.lost else None
        first = row is None
        if row is None:
            row = registry.fresh(self.sync, self.identity_pg())
            self.log.create(row.identity)
            if not self.doubts.exists():
                self.doubts.create(row.identity)
        kinds = (NEW,) if insert_only else SENT
        changed_state = bool(plan.new or (plan.sent and not insert_only) or plan.gone or first)
        version = row.version + 1 if changed_state else row.version
        live, logged = row.live, row.logged
        if changed_state:
            appended = self._count(self.sent_sql(kinds))
            live = known.owned + plan.new - plan.gone
            if kept or absent:  # what the policy kept out is not the sync's: count what is
                live = self._count(self.new_state_sql(gone, insert_only))
            if first or logged + appended + plan.gone > REWRITE_FACTOR * max(live, 1) + 10_000:
                # the tombstones stay (what the sync deleted, should a backup bring it back):
                # read before the log is emptied
                state = self.new_state_sql(gone, insert_only)
                ids = ", ".join(q(c) for c in self.identity)
                retired = [f"select {ids} from ({gone})"] if gone else []
                if known.retired:
                    retired.append(f"select {ids} from {known.retired}")
                kept = "temp.rt_retired"  # (a temp table: the transaction already writes to Postgres)
                self.con.execute(
                    f"""create or replace temp table rt_retired as
                        select * from ({" union ".join(retired) or f"select {ids} from ({state}) where false"})
                        anti join ({state}) n using ({ids})"""
                )
                self.log.rewrite(self.con, version, state, f"select * from {kept}")
                logged = live + int(self.con.execute(f"select count(*) from {kept}").fetchone()[0])
            else:
                self.log.append(self.con, version, self.sent_sql(kinds), gone)
                logged = logged + appended + (self._count(gone) if gone and absent else plan.gone)
        if self.doubts.exists():
            self.doubts.clear()
        watermark, partial = cursor  # change detection by cursor: how far this run read, and how
        registry.write(
            self.pg,
            SyncRow(
                self.sync, row.rows_table, row.doubt_table, row.identity, version, live, logged, row.epoch, digest,
                cursor=max_cursor(row.cursor, watermark), since_full=row.since_full + 1 if partial else 0,
            ),
        )  # fmt: skip
        sent_columns.record(self.pg, self.sync, columns)
        self.remembered = Remembered(version, row.epoch, first)
        self._gone = gone
        self._insert_only = insert_only
        return self.remembered

    def new_state_sql(self, gone: str | None, insert_only: bool) -> str:
        """The state after this run: the previous one, updated by what was sent, without what is gone."""
        known = self.known
        assert known is not None
        kinds = (NEW,) if insert_only else SENT
        sent = self.sent_sql(kinds)
        ids = ", ".join(q(c) for c in self.identity)
        on = " and ".join(f"s.{q(c)} = c.{q(c)}" for c in self.identity)
        previous = f"(select {ids}, fingerprint from {known.state} where recorded)"
        merged = f"""select {", ".join(f"coalesce(c.{q(x)}, s.{q(x)}) as {q(x)}" for x in self.identity)},
                            coalesce(c.fingerprint, s.fingerprint) as fingerprint
                     from {previous} s full outer join ({sent}) c on {on}"""
        if gone:
            on_gone = " and ".join(f"m.{q(c)} = g.{q(c)}" for c in self.identity)
            merged = f"select m.* from ({merged}) m anti join ({gone}) g on {on_gone}"
        return merged

    def _count(self, sql: str) -> int:
        """On the run's connection: what a write policy kept out may be in its temp tables."""
        return int(self.con.execute(f"select count(*) from ({sql})").fetchone()[0])

    def sent_sql(self, kinds: tuple[int, ...]) -> str:
        """Identity and fingerprint of the records of ``kinds`` the destination took."""
        sent = self.records.state_rows_sql(kinds)
        out = [t for t in (self._kept, self._absent) if t]
        if not out:
            return sent
        ids = ", ".join(q(c) for c in self.identity)
        return f"select * from ({sent}) anti join ({' union '.join(f'select {ids} from {t}' for t in out)}) x using ({ids})"

    def _gone_with_absent(self, gone: str | None) -> str | None:
        """What the state forgets: the records gone from the model, and those the destination
        does not hold because a policy kept them out of it."""
        if not self._absent:
            return gone
        ids = ", ".join(q(c) for c in self.identity)
        absent = f"select {ids} from {self._absent}"
        return absent if gone is None else f"select {ids} from ({gone}) union {absent}"

    def keep_rejected(self, run_id: int) -> None:
        if self.records.clean():
            return
        rejects.keep(self.pg, self.con, run_id, self.sync, self.records.rejected_sql())

    def prune_rejected(self) -> None:
        rejects.prune(self.pg, self.sync)

    def owed_refresh(self) -> list[str]:
        return sent_columns.owed_refresh(self.pg, self.sync) if self.recorded else []

    def owe_refresh(self, models: list[str]) -> None:
        sent_columns.owe_refresh(self.pg, self.sync, models)

    # ---------------------------------------------------------------- the local cache

    def prepare_cache(self, cursor: Any) -> None:
        """Before the commit (on ``cursor``, outside the transaction): a first state's cache file."""
        if self.dry_run or not self.remembered.first or self._kept or self._absent:
            return  # (what a policy kept out may be in the run's temp tables: written after the commit)
        self.cache.prepare_first(
            cursor, self.new_state_sql(self._gone, self._insert_only), self.remembered.epoch, self.remembered.version
        )

    def update_cache(self) -> None:
        """After the commit: the cache becomes the state just committed."""
        if self.dry_run:
            return
        r = self.remembered
        kinds_changed = () if self._insert_only else (CHANGED, HEALED)
        changed = self.sent_sql(kinds_changed) if kinds_changed else None
        stamp = self.cache.stamp() if self.cache.prepared is None else None
        whole = None
        if self.cache.prepared is None and (stamp is None or stamp[0] != r.epoch):
            whole = self.new_state_sql(self._gone, self._insert_only)
        self.cache.apply(r.epoch, r.version, changed, self.sent_sql((NEW,)), self._gone, whole)

    def close(self) -> None:
        self.cache.close()

    remembered: Remembered
    _gone: str | None = None
    _insert_only: bool = False
    _kept: str | None = None
    _absent: str | None = None


def max_cursor(before: str | None, now: str | None) -> str | None:
    """The watermark to keep ("TYPE|value"): what this run read up to (a run reads from the last
    watermark on, so it reaches at least as far), or the last one if it read nothing."""
    return now if now is not None else before


def state_schema_exists_pg(pg: PgSession) -> bool:
    return bool(
        pg.scalar(
            f"select to_regclass('{SCHEMA}.syncs') is not null and to_regclass('{SCHEMA}.sync_schemas') is not null"
        )
    )
