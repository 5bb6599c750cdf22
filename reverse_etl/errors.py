"""reverse_etl errors: the type decides whether a retry may help.

Each driver's errors are classified once, where the driver is called (its edge): psycopg in
``runs`` and ``state.doubts`` (``from_psycopg``), DuckDB's postgres extension in ``pg``
(``from_postgres_extension``), DuckDB itself in ``sources`` and ``scratch`` (``from_duckdb``),
redis in ``destinations.redis_link`` (``from_redis``). Above the edges everything is a
``SyncError``: ``TransientSyncError`` (a lost or refused connection, a server starting or
shutting down, too many connections, a deadlock or serialization failure, a lock not
available, the warehouse file locked by a `dbt build`) is retried with backoff; anything else
fails the run at once. Every message is redacted on the way: no password, DSN secret or token
survives into a log, a ``--json`` line, the run history or ``status``.
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


class DestinationError(SyncError):
    """The destination cannot take what the sync would write (a column it cannot hold, a key it
    cannot index): nothing was written; the message names the column and the fix."""


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
# libpq's messages for the transient kinds: DuckDB's postgres extension passes the server's
# message on without its SQLSTATE
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
    "the database system is in recovery mode",
    "no connection to the server",
    "ssl syscall",
    "connection reset",
    "broken pipe",
)


def _terminal_text(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in _TERMINAL_TEXT)


def _transient_text(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in _TRANSIENT_TEXT)


def _first_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[:n])


def _make(transient: bool, message: str, hint: str | None = None) -> SyncError:
    kind = TransientSyncError if transient else SyncError
    return kind(redact(message), hint=redact(hint) if hint else None)


# ---------------------------------------------------------------- one classifier per driver


def from_psycopg(exc: BaseException, what: str) -> SyncError:
    """A psycopg error (the run history, the lock, the write-ahead connection)."""
    import psycopg

    text = _first_lines(str(exc))
    if isinstance(exc, psycopg.Error):
        state = getattr(exc, "sqlstate", None) or ""
        if state.startswith(_TERMINAL_SQLSTATE) or _terminal_text(text):
            transient = False
        elif state:
            transient = state.startswith(_TRANSIENT_SQLSTATE)
        else:  # no SQLSTATE: the connection itself (refused, reset, timed out)
            transient = isinstance(exc, psycopg.OperationalError)
        return _make(transient, f"{what}: Postgres: {text}")
    return unexpected(exc, what)


def from_postgres_extension(exc: BaseException, what: str) -> SyncError:
    """An error of DuckDB's postgres extension: the server's message, without its SQLSTATE,
    after the statement DuckDB sent; the kind is read from libpq's words."""
    import duckdb

    if not isinstance(exc, duckdb.Error):
        return unexpected(exc, what)
    text = str(exc)
    if "ERROR:" in text:  # the statement, then the server's error
        cause = " ".join(text[text.index("ERROR:") :].split("\n")[0].split())
        return _make(not _terminal_text(cause) and _transient_text(cause), f"{what}: Postgres {cause}")
    if "NULL-byte" in text:
        return _make(False, f"{what}: a text value holds a NUL byte, which Postgres cannot store")
    return _make(not _terminal_text(text) and _transient_text(text), f"{what}: {_first_lines(text)}")


def from_duckdb(exc: BaseException, what: str) -> SyncError:
    """An error of DuckDB itself (the warehouse file, the run's scratch database)."""
    import duckdb

    if not isinstance(exc, duckdb.Error):
        return unexpected(exc, what)
    text = _first_lines(str(exc))
    if isinstance(exc, duckdb.IOException) and "lock" in text.lower():
        from roundtrip.core.duckdb_extensions import lock_holder

        holder = lock_holder(str(exc)) or "another process"
        return _make(
            True, f"{what}: the DuckDB warehouse is in use by {holder}", "it is retried; --wait SECONDS waits longer"
        )
    if isinstance(exc, duckdb.InterruptException):  # Ctrl-C: never retried
        return _make(False, f"{what}: interrupted (Ctrl-C)")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return _make(
            False,
            f"{what}: out of memory ({text})",
            "raise ROUNDTRIP_REVERSE_ETL_DUCKDB_MEMORY, or lower the sync's batch_rows",
        )
    return _make(not _terminal_text(text) and _transient_text(text), f"{what}: {type(exc).__name__}: {text}")


def from_redis(exc: BaseException, what: str) -> SyncError:
    """A redis-py error (or one of ours raised as redis-py's types by the link)."""
    import redis

    text = _first_lines(str(exc))
    if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError) or _terminal_text(
        text
    ):
        return _make(False, f"{what}: Redis refused the credentials: {text}", "check ROUNDTRIP_REDIS_URL")
    if isinstance(
        exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | redis.exceptions.TryAgainError
    ):
        return _make(True, f"{what}: Redis: {text}")  # BusyLoadingError is a ConnectionError
    if isinstance(exc, redis.exceptions.RedisError):
        return _make(False, f"{what}: Redis: {text}")
    if isinstance(exc, OSError):
        return _make(True, f"{what}: Redis connection: {text}")
    return unexpected(exc, what)


def unexpected(exc: BaseException, what: str) -> SyncError:
    """Anything no driver edge classified: terminal, unless it is a plain connection error."""
    if isinstance(exc, SyncError):
        return exc
    if isinstance(exc, RoundtripError):
        return SyncError(redact(f"{what}: {exc}"), hint=exc.hint)
    if isinstance(exc, MemoryError):
        return SyncError(
            f"{what}: out of memory",
            hint="lower the sync's batch_rows, or ROUNDTRIP_REVERSE_ETL_DUCKDB_MEMORY, or give the process more memory",
        )
    transient = isinstance(exc, ConnectionError | TimeoutError)
    return _make(transient, f"{what}: {type(exc).__name__}: {_first_lines(str(exc))}")


def is_transient(exc: BaseException) -> bool:
    """Whether an error may go away if the same work is tried again (any driver's)."""
    if isinstance(exc, SyncError):
        return isinstance(exc, TransientSyncError)
    return isinstance(classify(exc, ""), TransientSyncError)


def classify(exc: BaseException, what: str) -> SyncError:
    """Whichever driver raised ``exc``: its classifier (for the few places that catch several)."""
    module = type(exc).__module__
    if isinstance(exc, SyncError):
        return exc
    if module.startswith("psycopg"):
        return from_psycopg(exc, what)
    if module.startswith("redis"):
        return from_redis(exc, what)
    if module.startswith(("duckdb", "_duckdb")):
        text = str(exc)
        if "ERROR:" in text or "postgres" in text.lower():
            return from_postgres_extension(exc, what)
        return from_duckdb(exc, what)
    return unexpected(exc, what)
