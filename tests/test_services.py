"""The throwaway servers: real processes, stopped by pid, clear errors."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest
import redis

from roundtrip.core.errors import ServiceError
from roundtrip.dev.services import LocalPostgres, LocalRedis, PostgresEndpoint, RedisEndpoint, postgres_server


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): check its state
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


@pytest.mark.postgres
def test_local_postgres_serves_queries_and_stops_by_pid(tmp_path: Path) -> None:
    server = LocalPostgres(tmp_path)
    endpoint = server.start()
    pid = server.pid
    assert pid is not None and endpoint.host == "127.0.0.1"
    with psycopg.connect(endpoint.url()) as conn:
        conn.execute("create table t (x int)")
        conn.execute("insert into t values (41), (1)")
        assert conn.execute("select sum(x) from t").fetchone() == (42,)
    server.stop()
    assert not _alive(pid)
    assert not any(tmp_path.iterdir()), "the throwaway data folder is removed"


@pytest.mark.redis
def test_local_redis_serves_and_stops_by_pid(tmp_path: Path) -> None:
    server = LocalRedis(tmp_path)
    endpoint = server.start()
    pid = server.pid
    client = redis.Redis.from_url(endpoint.url())
    client.set("k", "v", ex=60)
    assert client.get("k") == b"v" and 0 < client.ttl("k") <= 60
    client.close()
    server.stop()
    assert pid is not None and not _alive(pid)


@pytest.mark.redis
def test_port_clash_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServiceError, match=f"port {port} .* already in use"):
            LocalRedis(tmp_path, port=port).start()


def test_missing_postgres_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from roundtrip.dev import services

    monkeypatch.setenv("ROUNDTRIP_PG_BIN", str(tmp_path / "nowhere"))
    monkeypatch.setattr(services.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(services.Path, "glob", lambda self, pattern: iter(()))
    with pytest.raises(ServiceError, match="no PostgreSQL server binaries found"):
        services.postgres_bin_dir()


def test_external_urls_are_parsed_without_starting_anything(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROUNDTRIP_POSTGRES_URL", "postgresql://app:s%40cret@db.internal:6543/crm")
    with postgres_server(tmp_path) as endpoint:
        assert endpoint == PostgresEndpoint("db.internal", 6543, "app", "crm", "s@cret", external=True)
        assert "s@cret" not in repr(endpoint) and "cret" not in endpoint.safe_url
    assert not any(tmp_path.iterdir())
    assert RedisEndpoint.from_url("redis://:pw@cache:6380/2") == RedisEndpoint("cache", 6380, 2, "pw", True)
    with pytest.raises(ServiceError, match="postgresql://"):
        PostgresEndpoint.from_url("mysql://x@y/z")


@pytest.mark.postgres
@pytest.mark.redis
def test_a_crashed_parent_leaves_no_server_running(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from roundtrip.dev.services import LocalPostgres, LocalRedis
        pg = LocalPostgres(Path({str(tmp_path)!r})); pg.start()
        rd = LocalRedis(Path({str(tmp_path)!r})); rd.start()
        print(pg.pid, rd.pid, flush=True)
        time.sleep(120)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    pids = [int(p) for p in child.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    child.send_signal(signal.SIGKILL)  # no cleanup code runs
    child.wait()
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_roundtrip_services_stops_and_cleans_up_on_sigterm_as_on_ctrl_c(tmp_path: Path, stop: signal.Signals) -> None:
    """`make services` stopped by a service manager (SIGTERM) or Ctrl-C (SIGINT): the servers
    are stopped by their pids, their folders removed, and it says so."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUNDTRIP_")}
    env |= {"ROUNDTRIP_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "300"}
    child = subprocess.Popen(
        [sys.executable, "-m", "roundtrip", "services"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    seen = []
    for line in child.stdout:
        seen.append(line)
        if "stops them" in line:
            break
    started = "".join(seen)
    pids = [int(pid) for pid in re.findall(r"started (?:PostgreSQL|Redis) pid (\d+)", started)]
    services = tmp_path / "data" / "services"
    assert len(pids) == 2 and all(_alive(p) for p in pids), started
    assert len(list(services.iterdir())) == 2, "a folder per server"

    child.send_signal(stop)
    rest, _ = child.communicate(timeout=60)
    assert child.returncode == 0, rest
    assert f"stopped on {'SIGTERM' if stop == signal.SIGTERM else 'Ctrl-C'}: servers stopped" in rest
    assert not any(_alive(p) for p in pids)
    assert list(services.iterdir()) == []
