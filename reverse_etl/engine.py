"""Run one sync: lock it, read the model from its warehouse, classify, write, record the run.

One attempt = one transaction on the state Postgres (shared with the writes when the destination
is Postgres). A transient failure (connection lost or refused, deadlock, ...) restarts the
attempt after an exponential backoff; anything else fails the run at once. Every outcome,
errors outside the attempt included, lands in the result (the CLI prints it) and, when the
history is reachable, in the run history; messages are redacted.

The order inside an attempt is what makes the destination the truth and the state a cache of
it that never claims more than the destination holds:

1. read the model (``sources``), the state and the columns last sent; refuse a schema change
   the sync's ``on_schema_change`` does not allow;
2. drift: ask the destination what it lost of what the state lists; those records are HEALED;
3. classify every record, check the guards (nothing written yet);
4. write-ahead (destinations outside the transaction, i.e. Redis): commit the keys about to be
   sent as in doubt;
5. write, update the state, clear the doubt, record the run's counts, commit (for Redis the
   state's part runs beside the write; the commit waits for the write's last reply);
6. refresh the serving models (replace), record the final status.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from reverse_etl import guards, schema_change
from reverse_etl.counts import SyncCounts
from reverse_etl.crashpoints import CrashPoints
from reverse_etl.destinations.base import Changes, Destination
from reverse_etl.errors import SyncError, SyncLockedError, TransientSyncError, translate
from reverse_etl.pg import Postgres
from reverse_etl.records import (
    CHANGE,
    CHANGED,
    HEALED,
    NEW,
    REASON,
    ROW,
    ROW_KEY,
    SENT,
    Plan,
    Records,
    Scratch,
    payload_columns,
)
from reverse_etl.runs import (
    BLOCKED,
    COMMITTED,
    FAILED,
    SUCCEEDED,
    WITH_REJECTS,
    RunLog,
    connect,
    record_end,
    record_end_sql,
    record_failure,
)
from reverse_etl.sources import open_source
from reverse_etl.spec import SyncSpec
from reverse_etl.state import StateStore
from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.core.redact import redact
from roundtrip.core.settings import Settings, load_settings

log = logging.getLogger(__name__)

LOCKED, PLANNED = "locked", "dry_run"


@dataclass
class Endpoints:
    """Where the state and the destinations live (resolved at the entry point, never at import)."""

    postgres_url: str | None = None
    redis_url: str | None = None


@dataclass
class RunOptions:
    dry_run: bool = False
    sample_size: int = 5  # dry run: changes, deletions and rejections shown
    dbt_project_dir: Path = PROJECT_ROOT  # where the serving models live (replace)
    # set by run_syncs: replace syncs note here the serving models they leave due (sync -> models)
    # instead of refreshing them at once, so that one dbt run refreshes them all at the end
    deferred_refresh: dict[str, list[str]] | None = None
    full_resync: bool = False  # send every record again, whatever the state says
    wait: float = 0  # seconds to wait for a DuckDB warehouse another process holds
    max_delete_pct: float | None = None  # this run's thresholds, overriding the sync's
    max_reject_pct: float | None = None
    settings: Settings | None = None  # resolved at the entry point (None: from the environment)
    on_rows: Any = None  # progress: called with (sync name, rows handed to the destination)


@dataclass
class SyncResult:
    spec: SyncSpec
    status: str = FAILED
    counts: SyncCounts = field(default_factory=SyncCounts)
    run_id: int | None = None
    attempts: int = 0
    seconds: float = 0.0
    error: str | None = None
    hint: str | None = None
    refreshed: list[str] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)  # dry run sample
    deletions: list[Any] = field(default_factory=list)  # dry run sample
    rejections: list[dict[str, Any]] = field(default_factory=list)  # first rejected rows
    committed: bool = False  # the writes are in (a failure after it is the refresh's)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase of the last attempt

    @property
    def ok(self) -> bool:
        return self.status in (SUCCEEDED, WITH_REJECTS, PLANNED)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sync": self.spec.name,
            "mode": self.spec.mode,
            "status": self.status,
            **self.counts.as_dict(),
            "seconds": round(self.seconds, 3),
            "run_id": self.run_id,
        }
        if self.status != PLANNED:
            out["attempts"] = self.attempts
        if self.refreshed:
            out["refreshed"] = self.refreshed
        if self.phases:
            out["phases"] = self.phases
        if self.error:
            out["error"] = self.error
        return out


def run_sync(spec: SyncSpec, endpoints: Endpoints, options: RunOptions | None = None) -> SyncResult:
    """Run (or with ``dry_run`` plan) one sync; failures are in the result, never raised."""
    options = options or RunOptions()
    started = time.perf_counter()
    result = SyncResult(spec)
    try:
        if not endpoints.postgres_url:
            raise SyncError(f"sync {spec.name}: no Postgres for the sync state", hint="set ROUNDTRIP_POSTGRES_URL")
        if options.dry_run:
            _guarded_attempt(spec, endpoints, options, result)
            result.status = PLANNED
        else:
            _run_with_retries(spec, endpoints, options, result)
    except SyncLockedError as exc:
        result.status, result.error = LOCKED, str(exc)
    except Exception as exc:  # every failure ends in the result, redacted
        error = translate(exc, spec.name)
        log.debug("sync %s failed", spec.name, exc_info=True)
        result.status = BLOCKED if isinstance(error, guards.GuardError) else FAILED
        result.error, result.hint = str(error), error.hint
        if result.run_id is not None and not options.dry_run:
            record_failure(
                endpoints.postgres_url or "",
                spec,
                result.run_id,
                result.error,
                result.counts if result.committed else None,
                result.status,
            )
    result.seconds = time.perf_counter() - started
    log.info("sync %s: %s in %.2fs (%s)", spec.name, result.status, result.seconds, result.counts.as_dict())
    return result


def run_syncs(specs: list[SyncSpec], endpoints: Endpoints, options: RunOptions | None = None) -> list[SyncResult]:
    """Run ``specs`` one after the other. The serving models that the replace syncs leave due
    are refreshed by one dbt run after the last sync rather than one per sync; a failed refresh
    fails each sync that was waiting for it (its writes stay committed, its debt is kept, and
    the next run pays it)."""
    options = options or RunOptions()
    if options.dry_run or sum(spec.mode == "replace" for spec in specs) < 2:
        return [run_sync(spec, endpoints, options) for spec in specs]
    deferred: dict[str, list[str]] = {}
    results = [run_sync(spec, endpoints, replace(options, deferred_refresh=deferred)) for spec in specs]
    waiting = [r for r in results if r.committed and deferred.get(r.spec.name)]
    if waiting:
        from reverse_etl.refresh import refresh_together

        url = endpoints.postgres_url or ""
        started = time.perf_counter()
        try:
            refreshed = refresh_together(
                [(r.spec, deferred[r.spec.name]) for r in waiting], url, options.dbt_project_dir
            )
        except Exception as exc:
            error = translate(exc, ", ".join(r.spec.name for r in waiting))
            for r in waiting:
                r.status, r.error = FAILED, str(error)
                if r.run_id is not None:
                    record_failure(url, r.spec, r.run_id, str(error), r.counts)
        else:
            for r in waiting:
                r.refreshed = refreshed[r.spec.name]
                _record_final(url, r)
        log.info("serving models refreshed for %d syncs in %.2fs", len(waiting), time.perf_counter() - started)
    return results


def _run_with_retries(spec: SyncSpec, endpoints: Endpoints, options: RunOptions, result: SyncResult) -> None:
    retry = spec.settings.retry

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0
        log.warning("sync %s: attempt %d failed (%s); retrying in %.1fs", spec.name, state.attempt_number, exc, wait)

    retrying = Retrying(
        retry=retry_if_exception_type(TransientSyncError),
        stop=stop_after_attempt(retry.attempts),
        wait=wait_exponential_jitter(
            initial=retry.backoff_seconds, max=retry.max_backoff_seconds, jitter=retry.backoff_seconds
        ),
        before_sleep=before_sleep,
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            result.attempts = attempt.retry_state.attempt_number
            if result.committed:  # a later phase failed: the writes are in, do not redo them
                return
            try:
                with RunLog(endpoints.postgres_url or "", spec) as runlog:
                    result.run_id = runlog.start(result.run_id, result.attempts)
                    _guarded_attempt(spec, endpoints, options, result)
                    if result.status == COMMITTED and not _refresh_deferred(spec, options):
                        result.status = WITH_REJECTS if result.counts.rejected else SUCCEEDED
                        runlog.finish(result.run_id, result.status, result.counts)
            except Exception as exc:
                raise translate(exc, spec.name) from exc


def _refresh_deferred(spec: SyncSpec, options: RunOptions) -> bool:
    return options.deferred_refresh is not None and bool(options.deferred_refresh.get(spec.name))


def _record_final(url: str, result: SyncResult) -> None:
    """After a deferred refresh: the run's final status (its counts were recorded at the commit)."""
    result.status = WITH_REJECTS if result.counts.rejected else SUCCEEDED
    if result.run_id is None:
        return
    try:
        with connect(url, result.spec.name, autocommit=True) as conn:
            record_end(conn, result.run_id, result.status, result.counts, None)
    except Exception as exc:
        log.warning("sync %s: could not record the end of run %s: %s", result.spec.name, result.run_id, redact(exc))


def open_destination(spec: SyncSpec, endpoints: Endpoints, pg: Postgres, options: RunOptions) -> Destination:
    if spec.settings.destination == "postgres":
        from reverse_etl.destinations.postgres import PostgresDestination
        from reverse_etl.refresh import refresh_serving_models

        deferred = options.deferred_refresh
        if deferred is not None:
            return PostgresDestination(spec, pg, partial(_defer_refresh, deferred, spec.name))
        refresh = partial(
            refresh_serving_models, spec, postgres_url=endpoints.postgres_url or "", project_dir=options.dbt_project_dir
        )
        return PostgresDestination(spec, pg, refresh)
    if not endpoints.redis_url:
        raise SyncError(f"sync {spec.name}: no Redis configured", hint="set ROUNDTRIP_REDIS_URL")
    from reverse_etl.destinations.redis import RedisDestination, RedisLink

    link = RedisLink(endpoints.redis_url)
    link.connect()
    return RedisDestination(spec, link)


def _defer_refresh(deferred: dict[str, list[str]], sync: str, names: list[str]) -> list[str]:
    deferred[sync] = names  # the debt is in the state already; run_syncs pays it
    return []


def _model_columns(spec: SyncSpec) -> list[str] | None:
    """The model columns a sync reads (a copying source reads only those)."""
    return list(spec.settings.columns) if spec.settings.columns else None


def _guarded_attempt(spec: SyncSpec, endpoints: Endpoints, options: RunOptions, result: SyncResult) -> None:
    try:
        _attempt(spec, endpoints, options, result)
    except Exception as exc:
        raise translate(exc, spec.name) from exc


def _attempt(spec: SyncSpec, endpoints: Endpoints, options: RunOptions, result: SyncResult) -> None:
    """One pass over the model, in one transaction (see the module docstring for the order);
    ``dry_run`` rolls it back and writes nothing anywhere."""
    settings = options.settings or load_settings()
    crash = CrashPoints(settings.test_crash_at)
    result.phases = {}
    timer = partial(_phase, result.phases)
    counts = SyncCounts()
    result.counts = counts
    result.rejections, result.changes, result.deletions = [], [], []
    dry_run = options.dry_run
    url = endpoints.postgres_url or ""
    destination: Destination | None = None
    state: StateStore | None = None
    pg: Postgres | None = None
    source = open_source(spec.warehouse, settings, wait=options.wait)
    try:
        with Scratch(settings.reverse_etl_duckdb_memory) as scratch:
            if spec.source is None:
                raise SyncError(f"sync {spec.name}: the manifest does not say where model {spec.model} is")
            with timer("read"):
                relation = source.relation(scratch.con, scratch.db, spec.source, _model_columns(spec))
                records = Records(scratch, spec, relation, source.describe(spec.source))
            try:
                pg = Postgres(scratch.con, url, spec.name, read_only=dry_run)
                destination = open_destination(spec, endpoints, pg, options)
                records.use(destination.shape(records.columns))
                state = StateStore(pg, records, spec, result.run_id, settings.data_dir / "reverse_etl", dry_run)
                change = schema_change.compare(state.recorded_columns(), records.types)
                schema_change.check(
                    change, spec.settings.on_schema_change, spec.name, spec.model, spec.settings.primary_key
                )
                with timer("state"):
                    owned = state.load(full_resync=options.full_resync)
                with timer("drift"):
                    drift = destination.drift(owned, records.state)
                    everything = f"select {_columns(records)} from {records.state} where recorded"
                    lost = records.mark_lost(everything if drift.all_lost else drift.lost)
                if lost:
                    log.warning(
                        "sync %s: the destination lost %d of %d records; writing them again", spec.name, lost, owned
                    )
                with timer("classify"):
                    plan = records.classify()
                    counts.read = plan.rows
                    for batch in records.rejected():
                        counts.read += batch.num_rows
                        counts.rejected += batch.num_rows
                        _sample_rejections(result, batch, options.sample_size)
                    tracks_gone = spec.mode in ("mirror", "replace")
                    gone_count = records.gone_count() if tracks_gone and owned else 0
                if not dry_run:
                    guards.check(spec.name, _thresholds(spec, options), owned, gone_count, counts.read, counts.rejected)
                crash.reached("classified")
                if dry_run:
                    counts.add(planned_counts(spec, plan))
                    counts.deleted = gone_count
                    _sample_changes(result, spec, records, options.sample_size)
                    if tracks_gone and gone_count:
                        result.deletions = _sample_gone(records, options.sample_size)
                    return
                state.gone_query = records.gone_sql() if tracks_gone and gone_count else None
                doubtful = _in_doubt_kinds(spec, destination)
                if doubtful and sum(getattr(plan, k) for k in doubtful):
                    with timer("write_ahead"), connect(url, spec.name, autocommit=True) as side:
                        state.mark_in_doubt(side, tuple(KINDS[k] for k in doubtful))
                    crash.reached("marked")
                first = [True]

                def handed(rows: int) -> None:
                    if first[0]:
                        first[0] = False
                        crash.reached("first_batch")
                    if options.on_rows is not None:
                        options.on_rows(spec.name, rows)

                changes = Changes(records, plan, gone_count, change, on_batch=handed)

                def remember() -> None:  # what the state must now say: known since classify
                    with timer("remember"):
                        if counts.rejected:
                            state.reject()
                        state.remember(state.gone_query)
                    with timer("cache"), contextlib.closing(scratch.con.cursor()) as outside:
                        state.prepare_cache(outside)  # a first state; in place once committed

                # the one transaction: the destination's writes (Postgres), the state, the record
                pg.begin()
                if destination.transactional:
                    with timer("write"):
                        counts.add(destination.write(changes))
                    crash.reached("written")
                    remember()
                else:  # Redis: the state's part runs beside the write, and commits after it
                    with timer("write"):
                        counts.add(_write_beside(destination, changes, scratch.con, remember))
                    crash.reached("written")
                with timer("finish"):
                    counts.add(destination.finish(state))
                state.record_columns(records.types)
                state.prune_rejected()
                final = WITH_REJECTS if counts.rejected else SUCCEEDED
                result.status = COMMITTED if _refresh_follows(destination) else final
                if result.run_id is not None:  # the run's record commits with its writes
                    pg.execute(record_end_sql(result.run_id, result.status, counts, None))
                with timer("commit"):
                    pg.commit()
                result.committed = True
            except BaseException:
                if pg is not None:
                    pg.rollback()
                if not result.committed:
                    result.counts = SyncCounts()  # nothing of this attempt was committed
                raise
            with timer("cache"):
                state.update_cache()
            crash.reached("committed")
            try:
                with timer("refresh"):
                    result.refreshed = destination.after_commit()
            except Exception as exc:  # the writes are in: never redo them, the debt stays owed
                raise SyncError(f"{translate(exc, spec.name)}") from exc
            crash.reached("refreshed")
    finally:
        if state is not None:
            state.close()
        if pg is not None:
            pg.detach()
        if destination is not None:
            destination.close()


def _write_beside(destination: Destination, changes: Changes, con: Any, beside: Any) -> SyncCounts:
    """``destination.write`` (on a cursor of its own) while ``beside`` runs on ``con`` in a
    helper thread: both wait on other processes (redis-server, Postgres) and release the GIL.
    Returns the write's counts once both are done; the write's error comes first."""
    cursor = con.cursor()
    try:
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="reverse_etl-state") as pool:
            job = pool.submit(beside)
            try:
                written = destination.write(replace(changes, records=changes.records.on(cursor)))
            finally:
                concurrent.futures.wait([job])  # never leave it running on the connection
            job.result()
            return written
    finally:
        cursor.close()


def _columns(records: Records) -> str:
    from roundtrip.core.sql import quote

    return ", ".join(quote(c) for c in records.identity_types())


KINDS = {"new": NEW, "changed": CHANGED, "healed": HEALED}


def _in_doubt_kinds(spec: SyncSpec, destination: Destination) -> tuple[str, ...]:
    """What a write outside the state's transaction must mark in doubt first: a record whose
    value the state would otherwise vouch for (changed, healed), and for mirror also a new one
    (a key the state never recorded would never be deleted). A new upsert or insert_only record
    is sent again anyway if the run dies, and SET NX never overwrites."""
    if destination.transactional or spec.mode == "insert_only":
        return ()
    return ("new", "changed", "healed") if spec.mode == "mirror" else ("changed", "healed")


@contextlib.contextmanager
def _phase(phases: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = round(phases.get(name, 0.0) + time.perf_counter() - started, 4)


def _refresh_follows(destination: Destination) -> bool:
    return bool(getattr(destination, "refresh_due", None))


def _thresholds(spec: SyncSpec, options: RunOptions) -> guards.Thresholds:
    s = spec.settings
    return guards.Thresholds(
        max_delete_pct=s.max_delete_pct if options.max_delete_pct is None else options.max_delete_pct,
        max_reject_pct=s.max_reject_pct if options.max_reject_pct is None else options.max_reject_pct,
    )


def planned_counts(spec: SyncSpec, plan: Plan) -> SyncCounts:
    """What a run would count, from the sync state alone (dry run)."""
    if spec.mode == "insert_only":
        return SyncCounts(inserted=plan.new, unchanged=plan.changed + plan.unchanged + plan.healed)
    return SyncCounts(inserted=plan.new, updated=plan.changed, unchanged=plan.unchanged, healed=plan.healed)


def _sample_changes(result: SyncResult, spec: SyncSpec, records: Records, limit: int) -> None:
    kinds = (NEW,) if spec.mode == "insert_only" else SENT
    action = {NEW: "insert", CHANGED: "update", HEALED: "heal"}
    shown = records.shape.shown if records.shape else {}
    for batch in records.records(kinds):
        for i in range(min(batch.num_rows, limit - len(result.changes))):
            if shown:  # a record that carries its own rendering (Redis: the key and the JSON value)
                row = {label: _parsed(batch[c][i].as_py()) for c, label in shown.items()}
            else:
                row = {c: batch[c][i].as_py() for c in payload_columns(batch)}
            result.changes.append(
                {"action": action[batch[CHANGE][i].as_py()], "key": _key(batch, i, records), "row": row}
            )
        if len(result.changes) >= limit:
            return


def _parsed(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _key(batch: Any, i: int, records: Records) -> Any:
    """A record's identity as a person reads it: the Redis key, or {key column: value}."""
    identity = list(records.shape.identity) if records.shape else []
    if len(identity) == 1 and identity[0].startswith("__rt_"):
        return batch[identity[0]][i].as_py()
    return {k: batch[k][i].as_py() for k in records.settings.primary_key}


def _sample_gone(records: Records, limit: int) -> list[Any]:
    sample: list[Any] = []
    identity = list(records.shape.identity) if records.shape else []
    for batch in records.gone():
        for row in batch.to_pylist()[: limit - len(sample)]:
            sample.append(row[identity[0]] if len(identity) == 1 and identity[0].startswith("__rt_") else row)
        if len(sample) >= limit:
            break
    return sample


def _sample_rejections(result: SyncResult, batch: pa.RecordBatch, limit: int) -> None:
    for i in range(min(batch.num_rows, max(0, limit - len(result.rejections)))):
        result.rejections.append(
            {
                "key": json.loads(batch[ROW_KEY][i].as_py()),
                "reason": batch[REASON][i].as_py(),
                "row": json.loads(batch[ROW][i].as_py()),
            }
        )
