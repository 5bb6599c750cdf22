"""reverse_etl errors: the type decides whether a retry may help.

Driver exceptions (psycopg, redis, duckdb) are translated once, at the edge of an attempt, by
``translate``: lost or refused connections, deadlocks, serialization failures, lock timeouts and
"too many connections" become ``TransientSyncError`` (retried with backoff); a refused password,
a missing database and everything else become ``SyncError`` (fails at once). Every message is
redacted on the way: no password, DSN secret or token survives into a log, a ``--json`` line,
the run history or ``status``.
"""

from __future__ import annotations

from roundtrip.core.errors import RoundtripError
from roundtrip.core.redact import redact


class SyncError(RoundtripError):
    """A sync cannot run or failed for good; the message names the sync and the cause."""


class TransientSyncError(SyncError):
    """Connection lost or refused, server restarting, deadlock, lock timeout: retried with backoff."""


class SyncLockedError(SyncError):
    """Another run of the same sync holds its lock: this run did nothing."""


# SQLSTATE classes and codes that say "the same request may work later"
_TRANSIENT_SQLSTATE = ("08", "40", "53", "57P", "55P03", "58")
# ...and those that never will: bad credentials, no such database or role
_TERMINAL_SQLSTATE = ("28", "3D000")
_TERMINAL_TEXT = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    "does not exist",  # database or role
    "pg_hba.conf",
    "invalid password",
    "wrongpass",
    "noauth",
    "invalid username-password",
)


def _is_auth_or_missing(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in _TERMINAL_TEXT)


def is_transient(exc: BaseException) -> bool:
    """Whether a driver exception may go away if the same work is tried again."""
    import duckdb
    import psycopg
    import redis

    if isinstance(exc, TransientSyncError):
        return True
    if isinstance(exc, RoundtripError):
        return False
    if isinstance(exc, psycopg.Error):
        state = getattr(exc, "sqlstate", None) or ""
        if state.startswith(_TERMINAL_SQLSTATE) or _is_auth_or_missing(str(exc)):
            return False
        if state:
            return state.startswith(_TRANSIENT_SQLSTATE)
        # no SQLSTATE: the connection itself (refused, reset, timed out)
        return isinstance(exc, psycopg.OperationalError)
    if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError):
        return False
    if isinstance(exc, redis.exceptions.ResponseError) and _is_auth_or_missing(str(exc)):
        return False
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return True  # BusyLoadingError is a ConnectionError
    if isinstance(exc, redis.exceptions.TryAgainError):
        return True
    if isinstance(exc, duckdb.Error):
        text = str(exc).lower()
        if _is_auth_or_missing(text):
            return False
        if isinstance(exc, duckdb.IOException) and "lock" in text:
            return True  # the warehouse file locked by a writer (a `dbt build`)
        # Postgres through DuckDB's postgres extension: its errors carry libpq's message, not
        # the SQLSTATE: the transient kinds by their words
        return any(marker in text for marker in _TRANSIENT_TEXT)
    return isinstance(exc, ConnectionError | TimeoutError)


_TRANSIENT_TEXT = (
    "could not serialize access",
    "deadlock detected",
    "lock timeout",
    "could not obtain lock",
    "canceling statement due to statement timeout",
    "server closed the connection",
    "connection refused",
    "could not connect",
    "connection to server",
    "terminating connection",
    "too many connections",
    "too many clients",
    "the database system is starting up",
    "the database system is shutting down",
    "no connection to the server",
    "ssl syscall",
)


def translate(exc: BaseException, sync: str) -> SyncError:
    """A driver exception as a SyncError of the right kind, naming the sync, secrets masked."""
    if isinstance(exc, SyncError):
        return type(exc)(redact(str(exc)), hint=exc.hint)
    if isinstance(exc, RoundtripError):
        return SyncError(f"sync {sync}: {redact(str(exc))}", hint=exc.hint)
    kind = TransientSyncError if is_transient(exc) else SyncError
    text = str(exc).strip()
    if "ERROR:" in text:  # Postgres through DuckDB: the statement, then the server's error
        cause = text[text.index("ERROR:") :].split("\n")[0]
        return kind(f"sync {sync}: Postgres {redact(' '.join(cause.split()))}")
    message = text.splitlines()
    text = " ".join(line.strip() for line in message[:3]) if message else ""
    return kind(f"sync {sync}: {type(exc).__name__}: {redact(text)}")
