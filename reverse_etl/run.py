"""One sync run, as the phases of its protocol.

The destination is the truth; the state is a cache of it that never claims more than the
destination holds. ``SyncRun.run`` is this list, in this order; each phase takes and returns
values, and the crash points of the fault tests sit between them:

 1. read         the model's columns, copied from its warehouse into the run's DuckDB; the
                 warehouse is released before anything is written
 2. shape        the destination's record shape: identity, fingerprint, rendering, and the rows
                 it cannot hold (rejected with a reason)
 3. state        the state's self-check and repairs, and the state the records classify against
                 (the local cache, or the log); a change of the model's columns is refused
                 unless ``on_schema_change`` allows it
    --- the run's one transaction on the state's Postgres opens; a Postgres destination's table
        is locked against other writers (readers go on) until the commit ---
 4. drift        what the destination does not hold as the state says: a digest or the server's
                 identity, a sample read back; everything read back when they disagree
 5. classify     every record new, changed, unchanged or healed; the rows rejected; the records
                 gone from the model                                             [classified]
 6. guard        thresholds on deletes and rejects; a dry run stops here
 7. write-ahead  a destination outside the transaction (Redis): the identities about to be sent,
                 committed as in doubt                                               [marked]
 8. write        new, changed and healed records; then deletes (mirror) or the swap (replace)
                                                                        [first_batch, written]
 9. remember     in the transaction: the state's log, doubts cleared, the destination's digest,
                 rejected rows (beside the write when the destination is outside it)
10. commit       the run's record with its counts, in the same transaction
11. cache        the local cache becomes the state just committed                 [committed]
12. refresh      serving views of a replace sync, after the commit                [refreshed]

A failure before the commit rolls everything back (Redis: the doubts make the next run send
again what this one may have written); after it, the writes stay and the refresh is owed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from reverse_etl import guards, preview, schema_change
from reverse_etl.connections import Connections
from reverse_etl.counts import SyncCounts
from reverse_etl.crashpoints import CrashPoints
from reverse_etl.destinations.base import Changes, Destination, Drift, Known, Written
from reverse_etl.errors import SyncError, classify
from reverse_etl.pg import PgSession
from reverse_etl.records import CHANGED, HEALED, NEW, Model, Plan, Records, q
from reverse_etl.results import RunOptions
from reverse_etl.runs import COMMITTED, FAILED, SUCCEEDED, WITH_REJECTS, RunEnd, connect
from reverse_etl.scratch import Scratch
from reverse_etl.sources import open_source
from reverse_etl.sources.base import Since
from reverse_etl.spec import SyncSpec
from reverse_etl.state import SyncState
from roundtrip.core.settings import Settings

log = logging.getLogger(__name__)
STATE_ALIAS = "rt_pg"
DESTINATION_ALIAS = "rt_dest"  # a Postgres destination outside the state's database
DELETING_MODES = ("mirror", "replace")


@dataclass
class Outcome:
    """What one attempt did (the engine turns it into the run's result)."""

    status: str
    counts: SyncCounts
    committed: bool = False
    refreshed: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    checked: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)
    deletions: list[Any] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # after the commit: what failed (the refresh), its debt kept
    read_by: str = "every row"  # change detection by cursor: which rows were read
    fields: dict[str, Any] = field(default_factory=dict)  # dry run: the updates, field by field
    schema_change: str = ""  # dry run: the change of the model's columns the run would follow
    seal: dict[str, str] = field(default_factory=dict)  # sync plan: the mart, state and destination it saw


@dataclass
class Verification:
    """What ``verify`` found: the model's records read back from the destination."""

    sync: str
    checked: int
    missing: int = 0  # in the model, not in the destination
    differs: int = 0  # in both, with other values
    no_ttl: int = 0  # Redis: the key lost its expiry
    extra: int = 0  # in the destination, not in the model, written (or deleted) by this sync
    others: int = 0  # in the destination, not in the model, never written by this sync
    sample: list[dict[str, Any]] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return self.missing + self.differs + self.no_ttl + self.extra

    def as_dict(self) -> dict[str, Any]:
        return {
            "sync": self.sync,
            "checked": self.checked,
            "missing": self.missing,
            "differing": self.differs,
            "no_ttl": self.no_ttl,
            "extra": self.extra,
            "not_ours": self.others,
            "sample": self.sample,
        }


def _shown(row: tuple[Any, ...], problem: str) -> dict[str, Any]:
    (*identity,) = row
    if problem == "extra":
        return {"problem": problem, "key": identity[0] if len(identity) == 1 else list(identity)}
    *key, _, columns = identity
    out: dict[str, Any] = {"problem": problem, "key": key[0] if len(key) == 1 else list(key)}
    if columns:
        out["columns"] = list(columns)
    return out


class SyncRun:
    """One attempt of one sync (see the module docstring)."""

    def __init__(
        self, spec: SyncSpec, connections: Connections, options: RunOptions, settings: Settings, run_id: int | None
    ) -> None:
        self.spec = spec
        self.connections = connections
        self.options = options
        self.settings = settings
        self.run_id = run_id
        self.dry_run = options.dry_run
        self.crash = CrashPoints(settings.test_crash_at)
        self.phases: dict[str, float] = {}
        self.repairs: list[str] = []
        self.committed = False
        self.scratch: Scratch | None = None
        self.pg: PgSession | None = None
        self.destination: Destination | None = None
        self.sync_state: SyncState | None = None
        self.change = schema_change.SchemaChange()
        self.gone: str | None = None
        self.refresh_due: list[str] = []
        self.rejections: list[dict[str, Any]] = []
        self.checked = 0
        self._first_batch = True
        self._work: Any = None
        self.model: Model | None = None
        self.partial = False  # read by cursor: only the rows that may have changed
        self.watermark: str | None = None
        self.read_by = "every row"
        self.records_now: Records | None = None

    # ---------------------------------------------------------------- the protocol

    def run(self) -> Outcome:
        with Scratch(self.settings.reverse_etl_duckdb_memory) as scratch:
            self.scratch = scratch
            try:
                since = self.since()
                model = self.read(since)
                records = self.shape(model)
                known = self.state(records)
                self.begin()
                try:
                    drift = self.drift(records, known)
                    if since is not None and (drift.lost or drift.extra):  # only every row can repair it
                        since, records, self.read_by = None, self.reshape(self.read(None)), "every row"
                    plan = self.classify(records, known, drift, partial=since is not None)
                    if self.sample_differs(records, known, plan):  # read everything back, then again
                        drift = self.drift(records, known, everything=True)
                        plan = self.classify(records, known, drift, partial=since is not None)
                    self.guard(plan, known)
                    if self.dry_run:
                        return self.planned(records, plan)
                    self.write_ahead(records, plan)
                    counts = self.write_and_remember(model, records, plan, drift)
                    status = self.commit(counts)
                except BaseException:
                    self.rollback()
                    raise
                self.cache()
                try:
                    refreshed = self.refresh()
                except SyncError as exc:  # the writes are in: never redone, the refresh stays owed
                    return Outcome(FAILED, counts, True, [], self.repairs, self.checked, error=str(exc))
                return Outcome(
                    status, counts, True, refreshed, self.repairs, self.checked, rejections=self.rejections,
                    read_by=self.read_by,
                )  # fmt: skip
            finally:
                self.close()

    def verify(self, limit: int) -> Verification:
        """``roundtrip sync verify``: phases 1 to 3, then every record of the model read back
        from the destination and compared; rows of the destination the model lacks, split into
        those this sync wrote (or deleted) and the others. Writes nothing."""
        assert self.dry_run
        with Scratch(self.settings.reverse_etl_duckdb_memory) as scratch:
            self.scratch = scratch
            try:
                model = self.read(None)
                records = self.shape(model)
                known = self.state(records)
                assert self.destination is not None
                with self.phase("verify"):
                    verified = self.destination.verify(records, None)
                    extra = self.destination.extra(records)
                ids = ", ".join(q(c) for c in records.shape.identity)
                ours = f"select {ids} from {known.state} where recorded"
                if known.retired:
                    ours += f" union select {ids} from {known.retired}"
                report = Verification(self.spec.name, verified.checked)
                for problem in ("missing", "differs", "no ttl"):
                    rows = self.con.execute(
                        f"select * from {verified.table} where __rt_problem = '{problem}' order by all"
                    ).fetchall()
                    setattr(report, problem.replace(" ", "_"), len(rows))
                    report.sample += [_shown(r, problem) for r in rows[:limit]]
                if extra is not None:
                    rows = self.con.execute(
                        f"select e.*, o.{q(next(iter(records.shape.identity)))} is not null from {extra} e "
                        f"left join ({ours}) o on {records.on('o', 'e')} order by all"
                    ).fetchall()
                    report.extra = sum(1 for r in rows if r[-1])
                    report.others = len(rows) - report.extra
                    report.sample += [_shown(r[:-1], "extra") for r in rows if r[-1]][:limit]
                return report
            finally:
                self.close()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = round(self.phases.get(name, 0.0) + time.perf_counter() - started, 4)

    @property
    def transactional(self) -> bool:
        return self.destination is not None and self.destination.capabilities.transactional

    @property
    def con(self) -> Any:
        """The run's DuckDB connection: it holds the state's transaction."""
        assert self.scratch is not None
        return self.scratch.con

    @property
    def work(self) -> Any:
        """A cursor of the run's DuckDB for its own work (drift, classification): outside the
        state's transaction."""
        if self._work is None:
            self._work = self.con.cursor()
        return self._work

    # ---------------------------------------------------------------- 1. read

    def session(self) -> PgSession:
        """The state's Postgres, attached to the run's DuckDB (once)."""
        if self.pg is None:
            name = self.spec.name
            url = self.connections.state_url
            self.pg = PgSession(self.con, url, STATE_ALIAS, f"reverse_etl:{name}", f"sync {name}", self.dry_run)
        return self.pg

    def since(self) -> Since | None:
        """Change detection by cursor: the rows to read, from the highest cursor value the last
        commit recorded; None: every row (the sync's first run, a full diff every
        ``full_diff_every`` runs, ``--full-resync``, ``verify --repair``)."""
        s = self.spec.settings
        if s.change_detection != "cursor" or s.cursor is None or self.options.full_resync or self.options.verify_all:
            return None
        from reverse_etl.state import registry
        from reverse_etl.state.schema import SCHEMA

        pg = self.session()
        if not pg.exists(SCHEMA, "syncs"):
            return None
        row = registry.read(pg, self.spec.name)
        if row is None or row.cursor is None or row.since_full + 1 >= s.full_diff_every:
            return None
        kind, _, value = row.cursor.partition("|")
        column = next((src for src, dst in (s.columns or {}).items() if dst == s.cursor), s.cursor)
        self.read_by = f"rows with {s.cursor} >= {value} (a full diff in {s.full_diff_every - row.since_full - 1} runs)"
        return Since(column, value, kind)

    def read(self, since: Since | None) -> Model:
        """The model's columns in the run's DuckDB, renamed as the sync says (``since``: only the
        rows the cursor says may have changed); the warehouse released."""
        spec, scratch = self.spec, self.scratch
        assert scratch is not None
        if spec.source is None:
            raise SyncError(f"sync {spec.name}: the manifest does not say where model {spec.model} is")
        mapping = spec.settings.columns
        with self.phase("read"):
            source = open_source(spec.warehouse, self.settings, wait=self.options.wait)
            try:
                columns = list(mapping) if mapping else None
                # on the work cursor: a read again after drift happens inside the state's transaction
                # into the run's in-memory database (it spills to the scratch folder beyond the
                # memory limit): three to six times faster to write than the scratch file
                relation = source.relation(self.work, scratch.shared, spec.source, columns, since)
            except Exception as exc:
                error = classify(exc, f"sync {spec.name}: model {spec.model}")
                text = str(error).lower()
                if "does not exist" in text and ("catalog" in text or "relation" in text or "table" in text):
                    target = "" if spec.warehouse == "duckdb" else f" --target {spec.warehouse}"
                    raise SyncError(
                        f"sync {spec.name}: model {spec.model} is not built yet ({source.describe(spec.source)})",
                        hint=f"build it and what it needs: roundtrip dbt build --select +exposure:{spec.name}{target}",
                    ) from exc
                raise error from exc
            where = f"sync {spec.name}: model {spec.model} ({source.describe(spec.source)})"
            return Model.of(self.work, relation, mapping, scratch.shared_table("model_renamed"), where)

    # ---------------------------------------------------------------- 2. shape

    def shape(self, model: Model) -> Records:
        """The destination's record shape over the model; its checks of the rows."""
        pg = self.session()
        self.destination = open_destination(self.spec, self.connections, pg, self.con, self.options)
        return self.reshape(model)

    def reshape(self, model: Model) -> Records:
        """The records of ``model`` in the destination's shape (again, after a full read)."""
        assert self.scratch is not None and self.destination is not None
        with self.phase("shape"):
            shape = self.destination.shape(model)
            records = Records(self.work, self.scratch.shared, self.spec, model, shape)
        if self.spec.settings.cursor and self.spec.settings.cursor not in model.columns:
            raise SyncError(
                f"sync {self.spec.name}: cursor column {self.spec.settings.cursor} not in model {self.spec.model}"
            )
        if self.sync_state is not None:
            self.sync_state.records = records
        self.model = model
        return records

    # ---------------------------------------------------------------- 3. state

    def state(self, records: Records) -> Known:
        """The state's self-check, then what it says the destination holds."""
        assert self.pg is not None and self.destination is not None
        spec = self.spec
        with self.phase("state"):
            state = SyncState(
                self.pg, self.con, spec.name, records, self.settings.data_dir / "reverse_etl", self.dry_run
            )
            self.sync_state = state
            checked = state.check()
            self.repairs += checked.repairs
            columns, ordered = state.recorded_columns()
            self.change = schema_change.compare(columns, records.types)
            schema_change.check(
                self.change, spec.settings.on_schema_change, spec.name, spec.model, spec.settings.primary_key
            )
            known_columns = columns if ordered else None
            if checked.lost and spec.settings.mode == "insert_only" and not self.options.full_resync:
                # what the app consumed (deleted) is known only to the lost state: a re-owned
                # insert_only sync would deliver every consumed entry again
                raise SyncError(
                    f"sync {spec.name}: its state was lost ({'; '.join(checked.repairs) or 'gone'}); mode "
                    "insert_only cannot tell the entries its destination's app consumed from new ones, and "
                    "would deliver them again",
                    hint="run it once with --full-resync to send every record its destination lacks "
                    "(consumed entries included), after removing from the mart what must not be sent",
                )
            adopt = checked.lost or (self.options.adopt and checked.row is None)
            if adopt:
                held = self.destination.held(records)
                known = state.reown(held, known_columns)
                self.repairs.append(
                    f"re-owned {known.owned:,} records its destination holds"
                    + ("" if self.options.adopt else " (its state was lost)")
                    + ": each is sent again"
                )
                log.warning("sync %s: %s", spec.name, self.repairs[-1])
                return known
            # a column added (or retyped) needs its values in every row: a renamed column keeps
            # the values, so the records' fingerprints alone would call every row unchanged
            every = self.options.full_resync or bool(self.change.added or self.change.retyped)
            return state.load(every, known_columns)

    def begin(self) -> None:
        """The run's one transaction on the state's Postgres (none in a dry run); the
        destination held against other writers until the commit, so that what drift sees is
        what the run writes over. The run's DuckDB work from here to the writes goes through
        its work cursor: a DuckDB transaction writes to one attached database only, and the
        main connection's starts on each database at its first use (after the classification)."""
        assert self.pg is not None and self.destination is not None
        if self.dry_run:
            return
        self.pg.begin()
        with self.phase("begin"):
            self.destination.hold()

    # ---------------------------------------------------------------- 4. drift

    def drift(self, records: Records, known: Known, everything: bool = False) -> Drift:
        """What the destination does not hold as the state says (``everything``: every record
        read back, as ``verify --repair`` does and as a sample that found a difference asks)."""
        assert self.destination is not None
        with self.phase("drift"):
            drift = self.destination.drift(records, known, -1 if everything or self.options.verify_all else 0)
        self.checked += drift.checked
        if drift.lost or drift.extra:
            self.repairs.append(f"the destination differed from the state ({drift.reason}): rewritten")
        return drift

    def sample_differs(self, records: Records, known: Known, plan: Plan) -> bool:
        """``verify_sample`` of the records classified unchanged, read back from the destination
        and compared with what the mart renders for them: whether any differs (edited by hand,
        restored from an older backup, narrowed...), so that the run reads everything back. Not
        for ``fill_empty``, whose destination values people write too."""
        sample = self.options.verify_sample
        if sample is None:
            sample = self.spec.settings.verify_sample
        if not sample or not plan.unchanged or self.options.verify_all or self.spec.settings.fill_empty:
            return False
        assert self.destination is not None
        ids = ", ".join(q(c) for c in records.shape.identity)
        chosen = records.table("rt_sampled")
        self.work.execute(
            f"""create or replace table {chosen} as select {ids} from {records.classified}
                where __rt_change = 0 using sample {int(sample)} rows"""
        )
        with self.phase("sample"):
            verified = self.destination.verify(records, f"select * from {chosen}")
        self.checked += verified.checked
        if verified.problems:
            log.warning(
                "sync %s: %d of the %d unchanged records read back differ from the mart: reading every record back",
                self.spec.name, verified.problems, verified.checked,
            )  # fmt: skip
        return bool(verified.problems)

    # ---------------------------------------------------------------- 5. classify

    def classify(self, records: Records, known: Known, drift: Drift, partial: bool = False) -> Plan:
        """Every record read classified; ``partial`` (read by cursor): the records not read are
        unchanged, and nothing is gone (deletes are found by the full diffs)."""
        with self.phase("classify"):
            plan = records.classify(known.state, drift.lost)
            for batch in records.rejected():
                plan.rejected += batch.num_rows
                self.rejections += preview.sample_rejections(batch, self.options.sample_size - len(self.rejections))
            if partial:
                plan.unchanged = max(known.owned - plan.changed - plan.healed, 0)
            elif self.spec.mode in DELETING_MODES and (known.owned or drift.extra):
                self.gone = records.gone_sql(known.state, drift.extra)
                plan.gone = records.count(self.gone)
            self.partial = partial
            self.watermark = self._watermark(records)
            self.records_now = records
        self.crash.reached("classified")
        return plan

    def _watermark(self, records: Records) -> str | None:
        """The highest cursor value read ("TYPE|value"), for the next run to read from."""
        cursor = self.spec.settings.cursor
        if self.spec.settings.change_detection != "cursor" or cursor is None:
            return None
        row = self.work.execute(f"select max({q(cursor)})::varchar from {records.accepted()}").fetchone()
        if not row or row[0] is None:
            return None
        return f"{records.types[cursor]}|{row[0]}"

    # ---------------------------------------------------------------- 6. guard

    def sealed(self, records: Records) -> dict[str, str]:
        """What a plan is made of: the classified records (their fingerprints), the state's
        version, and what the destination holds that the run would change."""
        assert self.destination is not None and self.sync_state is not None
        row = self.work.execute(
            f"select count(*), coalesce(bit_xor(__rt_fp), 0), sum(__rt_change) from {records.classified}"
        ).fetchone()
        state = self.sync_state.checked.row
        # the mart is its records' fingerprints; what the run would do with them (the sum of the
        # classification) moves with the destination (drift healed) or the state, said there
        return {
            "model": f"{row[0]}:{row[1]}" if row else "empty",
            "state": f"{state.epoch}:{state.version}" if state else "none",
            "destination": f"{self.destination.seal(records)}:{row[2] if row else 0}",
        }

    def guard(self, plan: Plan, known: Known) -> None:
        if self.options.expect is not None:  # sync apply: what the plan saw, still so?
            assert self.records_now is not None
            guards.check_seal(self.spec.name, self.options.expect, self.sealed(self.records_now))
        if self.dry_run:
            return
        s, o = self.spec.settings, self.options
        thresholds = guards.Thresholds(
            max_delete_pct=s.max_delete_pct if o.max_delete_pct is None else o.max_delete_pct,
            max_reject_pct=s.max_reject_pct if o.max_reject_pct is None else o.max_reject_pct,
        )
        guards.check(self.spec.name, thresholds, known.owned, plan.gone, plan.rows + plan.rejected, plan.rejected)

    def planned(self, records: Records, plan: Plan) -> Outcome:
        """A dry run's result: the counts and samples, nothing written anywhere."""
        limit = self.options.sample_size
        deletions = preview.sample_gone(records, self.gone, limit) if self.gone and plan.gone else []
        updates = 0 if self.spec.mode in ("insert_only", "replace") else plan.changed + plan.healed
        with self.phase("field_diff"):
            fields = preview.field_diff(records, self.destination, updates, limit) if updates else {}
        schema_change = ""
        if self.change:
            schema_change = f"{self.change.describe()} (on_schema_change: {self.spec.settings.on_schema_change})"
        return Outcome(
            "dry_run",
            preview.planned_counts(self.spec, plan),
            seal=self.sealed(records) if self.options.seal else {},
            read_by=self.read_by,
            fields=fields,
            schema_change=schema_change,
            repairs=self.repairs,
            checked=self.checked,
            changes=preview.sample_changes(self.spec, records, limit),
            deletions=deletions,
            rejections=self.rejections,
        )

    # ---------------------------------------------------------------- 7. write-ahead

    def write_ahead(self, records: Records, plan: Plan) -> None:
        """Outside the transaction: the identities a crash could leave wrong, committed as in
        doubt: changed and healed records (and for mirror new ones too: mirror deletes what it
        wrote). A new upsert record needs no mark: a killed run never recorded it, so the next
        run finds it new again; SET NX never overwrites."""
        if self.transactional or self.spec.mode == "insert_only":
            return
        kinds = (NEW, CHANGED, HEALED) if self.spec.mode == "mirror" else (CHANGED, HEALED)
        counts = {NEW: plan.new, CHANGED: plan.changed, HEALED: plan.healed}
        if not sum(counts[k] for k in kinds):
            return
        assert self.sync_state is not None
        with self.phase("write_ahead"):
            side = connect(self.connections.state_url, f"reverse_etl:{self.spec.name}")
            with side:
                self.sync_state.mark_in_doubt(side, self.run_id or 0, records.stream(records.identity_sql(kinds)))
        self.crash.reached("marked")

    # ---------------------------------------------------------------- 8. write

    def _changes(self, records: Records, plan: Plan) -> Changes:
        return Changes(records, plan, self.change, on_batch=self._handed)

    def _handed(self, rows: int) -> None:
        if self._first_batch:
            self._first_batch = False
            self.crash.reached("first_batch")
        if self.options.on_rows is not None:
            self.options.on_rows(self.spec.name, rows)

    def write(self, records: Records, plan: Plan) -> Written:
        """The destination's writes, then its deletes or swap; the refresh that follows is owed."""
        assert self.destination is not None and self.sync_state is not None
        with self.phase("write"):
            written = self.destination.write(self._changes(records, plan))
        counts = written.counts
        counts.read, counts.rejected = plan.rows + plan.rejected, plan.rejected
        self.crash.reached("written")
        with self.phase("finish"):
            owed = self.sync_state.owed_refresh() if self.spec.mode == "replace" else []
            finished = self.destination.finish(records, self.gone, owed)
            counts.add(finished.counts)
            self.refresh_due = finished.refresh_due
            if self.refresh_due:
                self.sync_state.owe_refresh(self.refresh_due)  # cleared once they are refreshed
        self.test_destination(records, plan)
        return written

    def write_and_remember(self, model: Model, records: Records, plan: Plan, drift: Drift) -> SyncCounts:
        """Phases 8 and 9, in the order the destination's transactions allow."""
        assert self.destination is not None
        if self.transactional:  # the state's own database: one transaction for both
            written = self.write(records, plan)
            self.remember(records, plan, self.digest(model, drift, written.counts), written)
        elif self.destination.capabilities.digest_moves:  # another database: it commits first
            written = self.write(records, plan)
            digest = self.digest(model, drift, written.counts)
            self.destination.commit()
            self.remember(records, plan, digest, written)
        elif self.spec.settings.match != "both":  # Redis, whose policy decides what the state records
            digest = self.digest(model, drift, None)
            written = self.write(records, plan)
            self.remember(records, plan, digest, written)
        else:  # Redis: the state's part runs beside the writes, which are durable as they go
            written = self.write_beside(records, plan, self.digest(model, drift, None))
        return written.counts

    def test_destination(self, records: Records, plan: Plan) -> None:
        """``meta.sync.tests`` on what the destination holds, before the commit: a failure fails
        the run loudly (a Postgres destination's writes then roll back; Redis's stay, and the
        write-ahead marks make the next run send them again)."""
        tests = self.spec.settings.tests
        if tests is None:
            return
        assert self.destination is not None
        with self.phase("tests"):
            failures = self.destination.test(records, tests, plan.records)
        if failures:
            kept = "nothing was committed" if self.destination.capabilities.digest_moves else "its writes stay"
            raise SyncError(
                f"sync {self.spec.name}: destination tests failed: {'; '.join(failures)}; {kept}",
                hint="see meta.sync.tests of the exposure; the model or the destination is not what the tests expect",
            )

    def write_beside(self, records: Records, plan: Plan, digest: str | None) -> Written:
        """``write`` on a cursor of its own while ``remember`` runs on the run's connection in
        a helper thread: both wait on other processes (redis-server, Postgres) and release the
        GIL. The write's error comes first; the helper is always waited for."""
        cursor = self.con.cursor()
        try:
            with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="reverse_etl-state") as pool:
                job = pool.submit(self.remember, records, plan, digest, None)
                try:
                    written = self.write(records.on_cursor(cursor), plan)
                finally:
                    concurrent.futures.wait([job])  # never leave it running on the connection
                job.result()
                return written
        finally:
            cursor.close()

    def digest(self, model: Model, drift: Drift, counts: SyncCounts | None) -> str | None:
        """What the destination holds (after the writes of a transactional destination; before
        those of one outside the transaction, whose connection the write then holds). A run
        that wrote nothing keeps what drift saw, held unchanged since."""
        assert self.destination is not None
        if self.spec.mode == "insert_only":
            return None
        if counts is not None and not counts.written and not self.change and drift.columns == model.columns:
            return drift.seen
        with self.phase("digest"):
            return self.destination.digest(model.columns)

    # ---------------------------------------------------------------- 9. remember

    def remember(self, records: Records, plan: Plan, digest: str | None, written: Written | None) -> None:
        """In the transaction: what the state must now say (``written``: what a write policy
        kept from the destination); the rejected rows kept."""
        assert self.sync_state is not None
        state = self.sync_state
        kept, absent = (written.kept, written.absent) if written else (None, None)
        with self.phase("remember"):
            state.remember(
                plan, self.gone, digest, dict(records.types), self.spec.mode == "insert_only", kept, absent,
                cursor=(self.watermark, self.partial),
            )  # fmt: skip
            if plan.rejected:
                state.keep_rejected(self.run_id or 0)
            state.prune_rejected()
        with self.phase("cache"), contextlib.closing(self.con.cursor()) as outside:
            state.prepare_cache(outside)  # a first state; later ones are updated once committed

    # ---------------------------------------------------------------- 10. commit

    def commit(self, counts: SyncCounts) -> str:
        """The run's record with its counts, and the commit of everything."""
        assert self.pg is not None
        final = WITH_REJECTS if counts.rejected else SUCCEEDED
        status = COMMITTED if self.refresh_due else final
        if self.run_id is not None:
            self.pg.execute(RunEnd(self.run_id, status, counts, notes="; ".join(self.repairs) or None).sql())
        with self.phase("commit"):
            self.pg.commit()
        self.committed = True
        return status

    def rollback(self) -> None:
        if self.destination is not None:
            self.destination.rollback()
        if self.pg is not None:
            self.pg.rollback()

    # ---------------------------------------------------------------- 11. cache

    def cache(self) -> None:
        assert self.sync_state is not None
        with self.phase("cache"):
            self.sync_state.update_cache()
        self.crash.reached("committed")

    # ---------------------------------------------------------------- 12. refresh

    def refresh(self) -> list[str]:
        """After the commit: the writes are in; a failure here never redoes them, the debt stays."""
        assert self.destination is not None
        try:
            with self.phase("refresh"):
                refreshed = self.destination.after_commit(self.refresh_due)
        except Exception as exc:
            raise classify(exc, f"sync {self.spec.name}: refreshing {', '.join(self.refresh_due)}") from exc
        self.crash.reached("refreshed")
        return refreshed

    def close(self) -> None:
        if self._work is not None:
            self._work.close()
            self._work = None
        if self.sync_state is not None:
            self.sync_state.close()
        if self.pg is not None:
            self.pg.detach()
        if self.destination is not None:
            self.destination.close()


def open_destination(
    spec: SyncSpec, connections: Connections, pg: PgSession, con: Any, options: RunOptions
) -> Destination:
    """The sync's destination, on its named connection. A Postgres destination in the state's
    database shares the state's session (one transaction); one elsewhere gets a session of its
    own, on a cursor of its own (a DuckDB transaction writes to one attached database only)."""
    connection = connections.destination(spec.settings.destination, spec.name)
    if connection.kind == "postgres":
        from reverse_etl.destinations.postgres import PostgresDestination
        from reverse_etl.refresh import refresh_serving_models

        shared = connections.shares_state(connection)
        session = pg
        if not shared:
            session = PgSession(
                con.cursor(), connection.url, DESTINATION_ALIAS, f"reverse_etl:{spec.name}", f"sync {spec.name}",
                options.dry_run, own_connection=True,
            )  # fmt: skip
        deferred = options.deferred_refresh
        if deferred is not None:
            return PostgresDestination(spec, session, shared, partial(_defer_refresh, deferred, spec.name))
        refresh = partial(
            refresh_serving_models, spec, postgres_url=connection.url, project_dir=options.dbt_project_dir
        )
        return PostgresDestination(spec, session, shared, refresh)
    from reverse_etl.destinations.redis import RedisDestination
    from reverse_etl.destinations.redis_link import RedisLink

    link = RedisLink(connection.url, f"sync {spec.name}")
    link.connect()
    return RedisDestination(spec, link)


def _defer_refresh(deferred: dict[str, list[str]], sync: str, names: list[str]) -> list[str]:
    deferred[sync] = names  # the debt is in the state already; run_syncs pays it
    return []
