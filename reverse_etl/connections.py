"""Where the sync state and the destinations live: connections by name, resolved at the entry
point (never at import), secrets never printed.

Today a project has one Postgres (``ROUNDTRIP_POSTGRES_URL``: the state, and every Postgres
destination) and one Redis (``ROUNDTRIP_REDIS_URL``), named ``postgres`` and ``redis`` after the
``destination`` setting of the syncs that use them. ``preflight`` reaches each connection a run
needs once, up front, with a short timeout, so that a server that is down fails the whole
invocation in one line instead of every sync after its retries.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

from reverse_etl.errors import SyncError
from roundtrip.core.redact import redact
from roundtrip.core.settings import Settings

PREFLIGHT_TIMEOUT = 3.0  # seconds to reach a server before the run gives up on it
PREFLIGHT_BACKOFF = (0.5, 1.0, 2.0)  # waits between attempts: a restarting server gets ~4 s


@dataclass(frozen=True)
class Connection:
    name: str
    kind: str  # postgres | redis
    url: str = field(repr=False)
    setting: str  # where it comes from, for messages

    @property
    def safe_url(self) -> str:
        return redact(self.url)


@dataclass(frozen=True)
class Connections:
    by_name: dict[str, Connection] = field(default_factory=dict)
    state: str | None = None  # the name of the Postgres connection that holds the sync state

    @classmethod
    def of(cls, postgres_url: str | None = None, redis_url: str | None = None) -> Connections:
        by_name = {}
        if postgres_url:
            by_name["postgres"] = Connection("postgres", "postgres", postgres_url, "ROUNDTRIP_POSTGRES_URL")
        if redis_url:
            by_name["redis"] = Connection("redis", "redis", redis_url, "ROUNDTRIP_REDIS_URL")
        return cls(by_name, "postgres" if postgres_url else None)

    @classmethod
    def from_settings(cls, settings: Settings) -> Connections:
        return cls.of(settings.secret("postgres_url"), settings.secret("redis_url"))

    @property
    def state_url(self) -> str:
        if self.state is None or self.state not in self.by_name:
            raise SyncError("no Postgres for the sync state", hint="set ROUNDTRIP_POSTGRES_URL")
        return self.by_name[self.state].url

    def destination(self, name: str, sync: str) -> Connection:
        found = self.by_name.get(name)
        if found is None:
            setting = "ROUNDTRIP_REDIS_URL" if name == "redis" else "ROUNDTRIP_POSTGRES_URL"
            raise SyncError(f"sync {sync}: no {name} connection configured", hint=f"set {setting}")
        return found

    def preflight(self, names: set[str]) -> None:
        """Reach every connection in ``names`` (and the state's) once; one error names the first
        that cannot be reached. A server that refuses for a moment (restarting) is tried again
        for a few seconds; one that is down fails the invocation in seconds."""
        wanted = sorted(names | ({self.state} if self.state else set()))
        for name in wanted:
            connection = self.by_name.get(name)
            if connection is None:
                setting = "ROUNDTRIP_REDIS_URL" if name == "redis" else "ROUNDTRIP_POSTGRES_URL"
                raise SyncError(f"no {name} connection configured", hint=f"set {setting}")
            for wait in (*PREFLIGHT_BACKOFF, None):
                try:
                    reach(connection)
                    break
                except SyncError as exc:
                    if wait is None or not exc.__cause__:
                        raise
                    time.sleep(wait)


def reach(connection: Connection) -> None:
    """A TCP connection to the server (no credentials sent): down, wrong port or a firewall
    fails here in seconds rather than after every sync's retries."""
    parts = urlparse(connection.url)
    default = 5432 if connection.kind == "postgres" else 6379
    try:
        host, port = parts.hostname or "127.0.0.1", parts.port or default
    except ValueError as exc:
        raise SyncError(f"{connection.setting} is not a valid URL: {redact(str(exc))}") from exc
    if parts.scheme not in (("postgres", "postgresql") if connection.kind == "postgres" else ("redis", "rediss")):
        expected = "postgresql://user:password@host:port/db" if connection.kind == "postgres" else "redis://host:port/0"
        raise SyncError(
            f"{connection.setting} must be a URL like {expected}, got {connection.safe_url!r}",
        )
    try:
        with socket.create_connection((host, port), timeout=PREFLIGHT_TIMEOUT):
            pass
    except OSError as exc:
        raise SyncError(
            f"cannot reach {connection.kind} at {host}:{port} ({connection.setting}): {exc.strerror or exc}",
            hint="is the server up? `make services` starts local ones; or fix the URL",
        ) from exc
