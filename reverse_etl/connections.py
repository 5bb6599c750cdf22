"""Where the sync state and the destinations live: connections by name, resolved at the entry
point (never at import), secrets never printed.

A project declares its connections once, in ``profiles/connections.yml``
(``ROUNDTRIP_SYNC_CONNECTIONS``), the way dbt's profiles declare outputs; a sync names one in
``meta.sync.destination``. Secrets come from the environment (``${VAR}``, ``${VAR:-default}``).
Without the file the project has two: ``postgres`` (``ROUNDTRIP_POSTGRES_URL``) and ``redis``
(``ROUNDTRIP_REDIS_URL``). The state lives in one Postgres connection (``state:``, default the
first Postgres one). ``preflight`` reaches each connection a run needs once, up front, with a
short timeout, so that a server that is down fails the whole invocation in one line instead of
every sync after its retries.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, ValidationError

from reverse_etl.errors import SyncError
from roundtrip.core.redact import redact
from roundtrip.core.settings import Settings

PREFLIGHT_TIMEOUT = 3.0  # seconds to reach a server before the run gives up on it
PREFLIGHT_BACKOFF = (0.5, 1.0, 2.0)  # waits between attempts: a restarting server gets ~4 s
Kind = Literal["postgres", "redis"]
DEFAULT_SETTING = {"postgres": "ROUNDTRIP_POSTGRES_URL", "redis": "ROUNDTRIP_REDIS_URL"}
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Connection:
    name: str
    kind: str  # postgres | redis
    url: str = field(repr=False)
    setting: str  # where it comes from, for messages
    unset: tuple[str, ...] = ()  # the ${VARIABLES} its URL reads that are not set: unusable

    def usable(self, sync: str | None = None) -> Connection:
        """This connection, or an error naming the variables its URL needs."""
        if not self.unset and not self.url:
            raise SyncError(f"connection {self.name} ({self.setting}) has no url", hint="give it one")
        if self.unset:
            names = ", ".join(self.unset)
            who = f"sync {sync}: " if sync else ""
            raise SyncError(
                f"{who}connection {self.name} ({self.setting}) reads {names}, which is not set",
                hint=f"export {self.unset[0]}=... (or give it a default: ${{{self.unset[0]}:-...}})",
            )
        return self

    @property
    def safe_url(self) -> str:
        return redact(self.url)


class _Declared(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Kind
    url: str = ""


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: str | None = None
    connections: dict[str, _Declared]


def expand(text: str, environ: dict[str, str] | None = None) -> str:
    """``${VAR}`` and ``${VAR:-default}`` from the environment (an unset variable: empty)."""
    env = os.environ if environ is None else environ
    return _VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


def unset_variables(text: str, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The ``${VAR}`` of ``text`` that are unset or empty and have no default."""
    env = os.environ if environ is None else environ
    return tuple(m.group(1) for m in _VARIABLE.finditer(text) if not env.get(m.group(1)) and m.group(2) is None)


def read_file(path: Path) -> _File | None:
    """The connections file, validated; None when there is none."""
    import yaml

    if not path.exists():
        return None
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return _File.model_validate(raw)
    except yaml.YAMLError as exc:
        raise SyncError(f"{path} is not valid YAML: {exc}", hint="fix the file (indentation, quotes, colons)") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise SyncError(f"{path}: {problems}", hint="see docs/reverse_etl.md, Named connections") from exc


def kinds(settings: Settings) -> dict[str, str]:
    """Connection name -> type, read from the file without resolving any secret (to check the
    syncs' settings)."""
    declared = read_file(settings.sync_connections)
    if declared is None:
        return {"postgres": "postgres", "redis": "redis"}
    return {name: c.type for name, c in declared.connections.items()}


@dataclass(frozen=True)
class Connections:
    by_name: dict[str, Connection] = field(default_factory=dict)
    state: str | None = None  # the name of the Postgres connection that holds the sync state
    source: str = "the environment"  # where they were declared, for messages

    @classmethod
    def of(cls, postgres_url: str | None = None, redis_url: str | None = None, **named: str) -> Connections:
        """``postgres`` and ``redis`` (and ``named`` ones: name -> URL, the type from the scheme)."""
        by_name = {}
        if postgres_url:
            by_name["postgres"] = Connection("postgres", "postgres", postgres_url, "ROUNDTRIP_POSTGRES_URL")
        if redis_url:
            by_name["redis"] = Connection("redis", "redis", redis_url, "ROUNDTRIP_REDIS_URL")
        for name, url in named.items():
            kind = "redis" if url.startswith(("redis://", "rediss://")) else "postgres"
            by_name[name] = Connection(name, kind, url, f"connection {name}")
        return cls(by_name, "postgres" if postgres_url else None)

    @classmethod
    def from_settings(cls, settings: Settings) -> Connections:
        path = settings.sync_connections
        declared = read_file(path)
        if declared is None:
            return cls.of(settings.secret("postgres_url"), settings.secret("redis_url"))
        # a connection whose URL reads an unset variable stays, unusable, to be named where used
        by_name = {
            name: Connection(name, c.type, expand(c.url), f"connection {name} ({path.name})", unset_variables(c.url))
            for name, c in declared.connections.items()
        }
        postgres = [n for n, c in declared.connections.items() if c.type == "postgres"]
        state = declared.state or (postgres[0] if postgres else None)
        if state is not None and state in declared.connections and declared.connections[state].type != "postgres":
            raise SyncError(
                f"{path}: state: {state} is a {declared.connections[state].type} connection; it must be postgres"
            )
        if state is not None and state not in declared.connections:
            raise SyncError(f"{path}: state: {state} is not a declared connection ({', '.join(declared.connections)})")
        return cls(by_name, state, str(path))

    @property
    def state_url(self) -> str:
        if self.state is None or self.state not in self.by_name:
            hint = "set ROUNDTRIP_POSTGRES_URL" if self.state in (None, "postgres") else f"set the URL of {self.state}"
            raise SyncError("no Postgres for the sync state", hint=f"{hint} ({self.source})")
        return self.by_name[self.state].usable().url

    def destination(self, name: str, sync: str) -> Connection:
        found = self.by_name.get(name)
        if found is None:
            setting = DEFAULT_SETTING.get(name, f"its URL in {self.source}")
            raise SyncError(f"sync {sync}: no {name} connection configured", hint=f"set {setting}")
        return found.usable(sync)

    def shares_state(self, connection: Connection) -> bool:
        """Whether a Postgres destination is the state's own database (one transaction for both)."""
        return connection.kind == "postgres" and self.state is not None and connection.url == self.state_url

    def preflight(self, names: set[str]) -> None:
        """Reach every connection in ``names`` (and the state's) once; one error names the first
        that cannot be reached. A server that refuses for a moment (restarting) is tried again
        for a few seconds; one that is down fails the invocation in seconds."""
        wanted = sorted(names | ({self.state} if self.state else set()))
        for name in wanted:
            connection = self.by_name.get(name)
            if connection is None:
                setting = DEFAULT_SETTING.get(name, f"its URL in {self.source}")
                raise SyncError(f"no {name} connection configured", hint=f"set {setting}")
            connection.usable()
            for wait in (*PREFLIGHT_BACKOFF, None):
                try:
                    reach(connection)
                    break
                except SyncError as exc:
                    if wait is None or not exc.__cause__:
                        raise
                    time.sleep(wait)

    def check(self, name: str) -> tuple[bool, str, float]:
        """Reach and log in to one connection (``sync connections``): (ok, what, seconds)."""
        connection = self.by_name[name]
        started = time.perf_counter()
        try:
            connection.usable()
            reach(connection)
            what = login(connection)
        except Exception as exc:
            return False, redact(str(exc)), time.perf_counter() - started
        return True, what, time.perf_counter() - started


def reach(connection: Connection) -> None:
    """A TCP connection to the server (no credentials sent): down, wrong port or a firewall
    fails here in seconds rather than after every sync's retries."""
    parts = urlparse(connection.url)
    schemes = ("postgres", "postgresql") if connection.kind == "postgres" else ("redis", "rediss")
    if parts.scheme not in schemes:
        expected = "postgresql://user:password@host:port/db" if connection.kind == "postgres" else "redis://host:port/0"
        raise SyncError(f"{connection.setting} must be a URL like {expected}, got {connection.safe_url!r}")
    default = 5432 if connection.kind == "postgres" else 6379
    try:
        host, port = parts.hostname or "127.0.0.1", parts.port or default
    except ValueError as exc:
        raise SyncError(f"{connection.setting} is not a valid URL: {redact(str(exc))}") from exc
    try:
        with socket.create_connection((host, port), timeout=PREFLIGHT_TIMEOUT):
            pass
    except OSError as exc:
        raise SyncError(
            f"cannot reach {connection.kind} at {host}:{port} ({connection.setting}): {exc.strerror or exc}",
            hint="is the server up? `make services` starts local ones; or fix the URL",
        ) from exc


def login(connection: Connection) -> str:
    """Log in and ask the server who it is: what ``sync connections`` shows."""
    if connection.kind == "postgres":
        from reverse_etl.runs import connect

        conn: Any = connect(connection.url, f"reverse_etl:connections:{connection.name}")
        with conn:
            row = conn.execute("select current_user, current_database(), current_setting('server_version')").fetchone()
        return f"PostgreSQL {row[2]}, database {row[1]} as {row[0]}"
    from reverse_etl.destinations.redis_link import RedisLink

    link = RedisLink(connection.url, f"connection {connection.name}")
    try:
        link.connect()
        reply = link.call([b"INFO", b"server"])
        version = next(
            (line.split(":", 1)[1] for line in reply.decode().splitlines() if line.startswith("redis_version:")), "?"
        )
        return f"Redis {version.strip()}, database {link.db}"
    finally:
        link.close()
