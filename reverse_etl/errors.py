"""reverse_etl errors: the type decides whether a retry may help.

Driver exceptions (psycopg, redis, duckdb) are translated once, at the edge of an attempt, by
``translate``: connection losses, deadlocks, serialization failures and lock timeouts become
``TransientSyncError`` (retried with backoff), everything else ``SyncError`` (fails at once).
"""

from __future__ import annotations

from roundtrip.core.errors import RoundtripError


class SyncError(RoundtripError):
    """A sync cannot run or failed for good; the message names the sync and the cause."""


class TransientSyncError(SyncError):
    """Connection lost, server restarting, deadlock, lock timeout: retried with backoff."""


class SyncLockedError(SyncError):
    """Another run of the same sync holds its lock: this run did nothing."""


def is_transient(exc: BaseException) -> bool:
    """Whether a driver exception may go away if the same work is tried again."""
    import duckdb
    import psycopg
    import redis

    if isinstance(exc, TransientSyncError):
        return True
    if isinstance(exc, SyncError):
        return False
    # psycopg: class 08 (connection), 40 (serialization failure, deadlock), 53 (resources),
    # 55P03 (lock not available), 57 (admin shutdown, statement cancelled) are OperationalError.
    if isinstance(exc, psycopg.OperationalError):
        return True
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return True  # BusyLoadingError is a ConnectionError
    if isinstance(exc, redis.exceptions.TryAgainError):
        return True
    # the warehouse file is locked by a writer (a `dbt build` in progress)
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def translate(exc: BaseException, sync: str) -> SyncError:
    """A driver exception as a SyncError of the right kind, naming the sync."""
    if isinstance(exc, SyncError):
        return exc
    kind = TransientSyncError if is_transient(exc) else SyncError
    return kind(f"sync {sync}: {type(exc).__name__}: {str(exc).strip()}")
