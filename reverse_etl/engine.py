"""Run one sync: lock it, stream the model, detect changes, write, record the run.

One attempt = one transaction on the state Postgres (shared with the writes when the destination
is Postgres). A transient failure (connection lost, deadlock, ...) restarts the attempt after an
exponential backoff; anything else fails the run at once. Every outcome lands in the run history.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from reverse_etl.counts import SyncCounts
from reverse_etl.destinations.base import Destination
from reverse_etl.errors import SyncError, SyncLockedError, TransientSyncError, translate
from reverse_etl.runs import FAILED, SUCCEEDED, WITH_REJECTS, RunLog, connect, record_failure
from reverse_etl.source import (
    CHANGE,
    CHANGED,
    KEY,
    NEW,
    REASON,
    ROW,
    ROW_KEY,
    TARGET,
    VALUE,
    ModelSource,
    Plan,
    payload_columns,
)
from reverse_etl.spec import SyncSpec
from reverse_etl.state import StateStore
from roundtrip.core.paths import PROJECT_ROOT

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


@dataclass
class SyncResult:
    spec: SyncSpec
    status: str = FAILED
    counts: SyncCounts = field(default_factory=SyncCounts)
    run_id: int | None = None
    attempts: int = 0
    seconds: float = 0.0
    error: str | None = None
    refreshed: list[str] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)  # dry run sample
    deletions: list[Any] = field(default_factory=list)  # dry run sample
    rejections: list[dict[str, Any]] = field(default_factory=list)  # first rejected rows
    committed: bool = False  # the writes are in (a failure after it is the refresh's)

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
        if self.error:
            out["error"] = self.error
        return out


def run_sync(spec: SyncSpec, endpoints: Endpoints, options: RunOptions | None = None) -> SyncResult:
    """Run (or with ``dry_run`` plan) one sync; failures are in the result, not raised."""
    options = options or RunOptions()
    started = time.perf_counter()
    result = SyncResult(spec)
    try:
        if not endpoints.postgres_url:
            raise SyncError(f"sync {spec.name}: no Postgres for the sync state (ROUNDTRIP_POSTGRES_URL)")
        if options.dry_run:
            _attempt(spec, endpoints, options, result)
            result.status = PLANNED
        else:
            _run_with_retries(spec, endpoints, options, result)
    except SyncLockedError as exc:
        result.status, result.error = LOCKED, str(exc)
    except SyncError as exc:
        log.debug("sync %s failed", spec.name, exc_info=True)
        result.status, result.error = FAILED, str(exc)
        if result.run_id is not None:
            record_failure(
                endpoints.postgres_url or "", spec, result.run_id, str(exc), result.counts if result.committed else None
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
    waiting = [r for r in results if r.ok and deferred.get(r.spec.name)]
    if waiting:
        from reverse_etl.refresh import refresh_together

        url = endpoints.postgres_url or ""
        started = time.perf_counter()
        try:
            refreshed = refresh_together(
                [(r.spec, deferred[r.spec.name]) for r in waiting], url, options.dbt_project_dir
            )
        except SyncError as exc:
            for r in waiting:
                r.status, r.error = FAILED, str(exc)
                if r.run_id is not None:
                    record_failure(url, r.spec, r.run_id, str(exc), r.counts)
        else:
            for r in waiting:
                r.refreshed = refreshed[r.spec.name]
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
            with RunLog(endpoints.postgres_url or "", spec) as runlog:
                result.run_id = runlog.start(result.run_id, result.attempts)
                _attempt(spec, endpoints, options, result)
                result.status = WITH_REJECTS if result.counts.rejected else SUCCEEDED
                runlog.finish(result.run_id, result.status, result.counts)


def open_destination(spec: SyncSpec, endpoints: Endpoints, conn: Any, options: RunOptions) -> Destination:
    if spec.settings.destination == "postgres":
        from reverse_etl.destinations.postgres import PostgresDestination
        from reverse_etl.refresh import refresh_serving_models

        deferred = options.deferred_refresh
        if deferred is not None:
            return PostgresDestination(spec, conn, partial(_defer_refresh, deferred, spec.name))
        refresh = partial(
            refresh_serving_models, spec, postgres_url=endpoints.postgres_url or "", project_dir=options.dbt_project_dir
        )
        return PostgresDestination(spec, conn, refresh)
    if not endpoints.redis_url:
        raise SyncError(f"sync {spec.name}: no Redis configured (ROUNDTRIP_REDIS_URL)")
    import redis

    from reverse_etl.destinations.redis import RedisDestination

    client = redis.Redis.from_url(endpoints.redis_url)
    client.ping()
    return RedisDestination(spec, client)


def _defer_refresh(deferred: dict[str, list[str]], sync: str, names: list[str]) -> list[str]:
    deferred[sync] = names  # the debt is in the state already; run_syncs pays it
    return []


def _attempt(spec: SyncSpec, endpoints: Endpoints, options: RunOptions, result: SyncResult) -> None:
    """One pass over the model, in one transaction; ``dry_run`` rolls it back and writes nothing.

    DuckDB reads the sync state and classifies every record in one set-based pass; then the
    destination gets what its mode needs, the state the fingerprints of what was sent."""
    counts = SyncCounts()
    result.counts = counts
    result.rejections, result.changes, result.deletions = [], [], []
    dry_run = options.dry_run
    destination: Destination | None = None
    try:
        with ModelSource(spec) as source, connect(endpoints.postgres_url or "", spec.name, autocommit=False) as conn:
            state = StateStore(conn, spec, result.run_id, dry_run=dry_run)
            try:
                source.load_state(endpoints.postgres_url, state.snapshot_query())
                plan = source.classify()
                counts.read = plan.rows
                for batch in source.rejected():
                    counts.read += batch.num_rows
                    counts.rejected += batch.num_rows
                    state.reject(batch)
                    _sample_rejections(result, batch, options.sample_size)
                tracks_gone = spec.mode in ("mirror", "replace")
                if dry_run:
                    counts.add(planned_counts(spec, plan))
                    _sample_changes(result, spec, source, options.sample_size)
                    if tracks_gone:
                        counts.deleted = source.gone_count()
                        result.deletions = _sample_gone(source, options.sample_size)
                    conn.rollback()
                    return
                gone = state.stage_gone(source.gone()) if tracks_gone else 0
                destination = open_destination(spec, endpoints, conn, options)
                counts.add(destination.send(source, plan, gone))
                state.remember(source.state_rows((NEW,)), source.state_rows((CHANGED,)))
                counts.add(destination.finish(state))
                state.prune_rejected()
                conn.commit()
                result.committed = True
            except BaseException:
                conn.rollback()
                result.counts = SyncCounts()  # nothing of this attempt was committed
                raise
            result.refreshed = destination.after_commit()
    except Exception as exc:
        raise translate(exc, spec.name) from exc
    finally:
        if destination is not None:
            destination.close()


def planned_counts(spec: SyncSpec, plan: Plan) -> SyncCounts:
    """What a run would count, from the sync state alone (dry run)."""
    if spec.mode == "insert_only":
        return SyncCounts(inserted=plan.new, unchanged=plan.changed + plan.unchanged)
    return SyncCounts(inserted=plan.new, updated=plan.changed, unchanged=plan.unchanged)


def _sample_changes(result: SyncResult, spec: SyncSpec, source: ModelSource, limit: int) -> None:
    kinds = (NEW,) if spec.mode == "insert_only" else (NEW, CHANGED)
    for batch in source.records(kinds):
        for i in range(min(batch.num_rows, limit - len(result.changes))):
            columns = payload_columns(batch)
            if columns:
                row = {c: batch[c][i].as_py() for c in columns}
            else:  # redis: the key and its JSON value
                row = {"key": batch[TARGET][i].as_py(), "value": json.loads(batch[VALUE][i].as_py())}
            result.changes.append(
                {
                    "action": "insert" if batch[CHANGE][i].as_py() == NEW else "update",
                    "key": json.loads(batch[KEY][i].as_py()),
                    "row": row,
                }
            )
        if len(result.changes) >= limit:
            return


def _sample_gone(source: ModelSource, limit: int) -> list[Any]:
    sample: list[Any] = []
    for batch in source.gone():
        sample += [json.loads(k) for k in batch.column(0).to_pylist()[: limit - len(sample)]]
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
