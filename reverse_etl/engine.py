"""Run syncs: each under its lock, with its history row, retried on transient errors.

``run_sync`` owns a run's lifecycle (dlt's ``run_managed``): the lock and the history row
(``runs.RunHistory``), the retries of an attempt that failed for a transient reason, and the one
result every outcome ends in, errors included (the CLI prints it); the work of an attempt is
``run.SyncRun``'s phases. ``run_syncs`` runs several, sharing one refresh of the serving views
among the replace syncs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from reverse_etl.connections import Connections
from reverse_etl.errors import SyncLockedError, TransientSyncError, classify
from reverse_etl.guards import GuardError, StalePlanError
from reverse_etl.results import LOCKED, PLANNED, STALE, RunOptions, SyncResult
from reverse_etl.run import Outcome, SyncRun
from reverse_etl.runs import BLOCKED, COMMITTED, FAILED, SUCCEEDED, WITH_REJECTS, RunEnd, RunHistory, record_end
from reverse_etl.spec import SyncSpec
from roundtrip.core.logs import log_context
from roundtrip.core.redact import redact
from roundtrip.core.settings import Settings, load_settings

log = logging.getLogger(__name__)

__all__ = ["Connections", "RunOptions", "SyncResult", "run_sync", "run_syncs"]


def run_sync(spec: SyncSpec, connections: Connections, options: RunOptions | None = None) -> SyncResult:
    """Run (or with ``dry_run`` plan) one sync; failures are in the result, never raised. Its
    log records carry the sync's name (``--log-format json``)."""
    with log_context(sync=spec.name):
        result = _run_sync(spec, connections, options)
        level = {FAILED: logging.ERROR, BLOCKED: logging.ERROR, LOCKED: logging.WARNING}.get(
            result.status, logging.INFO
        )
        failure = {"error": result.error, "hint": result.hint} if result.error else {}
        log.log(level, "sync %s: %s in %.2fs", spec.name, result.status, result.seconds, extra=failure)
    return result


def _run_sync(spec: SyncSpec, connections: Connections, options: RunOptions | None) -> SyncResult:
    options = options or RunOptions()
    started = time.perf_counter()
    result = SyncResult(spec)
    settings = options.settings or load_settings()
    outbox = settings.data_dir / "reverse_etl" / "outbox.jsonl"
    try:
        if options.dry_run:
            result.attempts = 1
            run = SyncRun(spec, connections, options, settings, None)
            try:
                _apply(result, run.run())
            finally:
                result.phases = run.phases
            result.status = PLANNED
        else:
            _run_with_retries(spec, connections, options, settings, result, outbox)
    except SyncLockedError as exc:
        result.status, result.error = LOCKED, str(exc)
    except KeyboardInterrupt:  # Ctrl-C between statements: on record as failed (not "abandoned")
        result.status, result.error = FAILED, f"sync {spec.name}: interrupted (Ctrl-C)"
        if not options.dry_run:
            counts = result.counts if result.committed else None
            end = RunEnd(result.run_id, result.status, counts, result.error, result.attempts)
            record_end(_state_url(connections), spec, end, outbox)
        raise
    except Exception as exc:  # every failure ends in the result, redacted (MemoryError included)
        error = classify(exc, f"sync {spec.name}")
        log.debug("sync %s failed", spec.name, exc_info=True)
        result.status = (
            BLOCKED if isinstance(error, GuardError) else STALE if isinstance(error, StalePlanError) else FAILED
        )
        result.error, result.hint = redact(str(error)), error.hint
        if not options.dry_run:
            counts = result.counts if result.committed else None
            end = RunEnd(result.run_id, result.status, counts, result.error, result.attempts)
            record_end(_state_url(connections), spec, end, outbox)
        if _interrupted(exc):  # Ctrl-C inside a DuckDB statement: on record, then the CLI's 130
            raise KeyboardInterrupt from exc
    result.seconds = time.perf_counter() - started
    return result


def _interrupted(exc: BaseException) -> bool:
    """DuckDB turns a Ctrl-C during its statement into ``InterruptException``, an ordinary error."""
    import duckdb

    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:  # a chain can loop back on itself
        if isinstance(seen, duckdb.InterruptException | KeyboardInterrupt):
            return True
        visited.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return False


def _state_url(connections: Connections) -> str | None:
    try:
        return connections.state_url
    except Exception:
        return None


def _apply(result: SyncResult, outcome: Outcome) -> None:
    result.status, result.counts, result.committed = outcome.status, outcome.counts, outcome.committed
    result.refreshed, result.repairs, result.checked = outcome.refreshed, outcome.repairs, outcome.checked
    result.changes, result.deletions, result.rejections = outcome.changes, outcome.deletions, outcome.rejections
    result.read_by, result.fields, result.schema_change = outcome.read_by, outcome.fields, outcome.schema_change
    result.seal = outcome.seal
    if outcome.error:
        result.error = outcome.error


def _run_with_retries(
    spec: SyncSpec, connections: Connections, options: RunOptions, settings: Settings, result: SyncResult, outbox: Path
) -> None:
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
    deferred = options.deferred_refresh is not None
    for attempt in retrying:
        with attempt:
            result.attempts = attempt.retry_state.attempt_number
            if result.committed:  # a later phase failed: the writes are in, never redo them
                return
            try:
                with RunHistory(connections.state_url, spec.name, spec.mode, spec.destination, outbox) as history:
                    result.run_id = history.start(result.run_id, result.attempts)
                    run = SyncRun(spec, connections, options, settings, result.run_id)
                    try:
                        outcome = run.run()
                    finally:
                        result.phases = run.phases
                    _apply(result, outcome)
                    if outcome.error:  # after the commit: the refresh failed, its debt is kept
                        history.finish(RunEnd(result.run_id, FAILED, outcome.counts, outcome.error, result.attempts))
                        result.status = FAILED
                    elif outcome.status == COMMITTED and not (deferred and outcome.committed):
                        result.status = _final(result)
                        history.finish(RunEnd(result.run_id, result.status, result.counts, attempts=result.attempts))
                    elif result.attempts > 1:
                        history.finish(RunEnd(result.run_id, result.status, result.counts, attempts=result.attempts))
            except Exception as exc:
                raise classify(exc, f"sync {spec.name}") from exc


def _final(result: SyncResult) -> str:
    return WITH_REJECTS if result.counts.rejected else SUCCEEDED


def run_syncs(specs: list[SyncSpec], connections: Connections, options: RunOptions | None = None) -> list[SyncResult]:
    """Run ``specs`` one after the other. The serving models that the replace syncs leave due
    are refreshed by one pass after the last sync rather than one per sync; a failed refresh
    fails each sync that was waiting for it (its writes stay committed, its debt is kept, and
    the next run pays it)."""
    options = options or RunOptions()
    if options.dry_run or sum(spec.mode == "replace" for spec in specs) < 2:
        return [run_sync(spec, connections, options) for spec in specs]
    deferred: dict[str, list[str]] = {}
    results = [run_sync(spec, connections, replace(options, deferred_refresh=deferred)) for spec in specs]
    waiting = [r for r in results if r.committed and r.status == COMMITTED and deferred.get(r.spec.name)]
    if not waiting:
        return results
    from reverse_etl.refresh import refresh_together

    url = connections.state_url
    settings = options.settings or load_settings()
    outbox = settings.data_dir / "reverse_etl" / "outbox.jsonl"
    started = time.perf_counter()
    try:
        refreshed = refresh_together([(r.spec, deferred[r.spec.name]) for r in waiting], url, options.dbt_project_dir)
    except Exception as exc:
        error = classify(exc, ", ".join(r.spec.name for r in waiting))
        for r in waiting:
            r.status, r.error = FAILED, redact(str(error))
            if r.run_id is not None:
                record_end(url, r.spec, RunEnd(r.run_id, FAILED, r.counts, r.error, r.attempts), outbox)
    else:
        for r in waiting:
            r.refreshed = refreshed[r.spec.name]
            r.status = _final(r)
            if r.run_id is not None:
                record_end(url, r.spec, RunEnd(r.run_id, r.status, r.counts, attempts=r.attempts), outbox)
    log.info("serving models refreshed for %d syncs in %.2fs", len(waiting), time.perf_counter() - started)
    return results
