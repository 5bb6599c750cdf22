"""Shared fixtures: real servers started once per test session, real DuckDB files per test.

Postgres and Redis are the project's own throwaway servers (roundtrip.dev.services), or external
ones when ROUNDTRIP_POSTGRES_URL / ROUNDTRIP_REDIS_URL are set. Nothing is mocked.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.core.settings import load_settings
from roundtrip.dev.services import PostgresEndpoint, RedisEndpoint, postgres_server, redis_server

# Before anything imports gRPC (the BigQuery clients): its fork handlers must not run when a
# test worker that used them forks the JVM of the Spark session (pyspark starts it with a
# preexec_fn, so by fork(), not vfork); with them, the gateway could die before it started.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# emulators of BigQuery, GCS and S3; the loaders' `warehouse` fixture over every target
pytest_plugins = ["tests.emulators", "tests.loader_fixtures"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests without a cost marker are `fast`."""
    costly = {"postgres", "redis", "bigquery", "object_store", "mysql", "spark", "slow"}
    for item in items:
        if not costly & {m.name for m in item.iter_markers()}:
            item.add_marker(pytest.mark.fast)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresEndpoint]:
    """One PostgreSQL server for the whole session (tests use their own schemas or databases)."""
    with postgres_server(load_settings().test_services_dir) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def redis_endpoint() -> Iterator[RedisEndpoint]:
    with redis_server(load_settings().test_services_dir) as endpoint:
        yield endpoint


@pytest.fixture
def pg_database(postgres: PostgresEndpoint) -> Iterator[PostgresEndpoint]:
    """A fresh, empty database on the session server, dropped afterwards."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    endpoint = PostgresEndpoint(postgres.host, postgres.port, postgres.user, name, postgres.password, postgres.external)
    yield endpoint
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def redis_client(redis_endpoint: RedisEndpoint) -> Iterator[object]:
    """A client on a flushed database."""
    import redis

    client = redis.Redis.from_url(redis_endpoint.url())
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every ROUNDTRIP_* path at a temporary folder: warehouse, landing, app DB."""
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv("ROUNDTRIP_DATA_DIR", str(folder))
    monkeypatch.setenv("ROUNDTRIP_DUCKDB_PATH", str(folder / "warehouse.duckdb"))
    monkeypatch.setenv("ROUNDTRIP_LANDING_PATH", str(folder / "landing"))
    monkeypatch.setenv("ROUNDTRIP_APP_DB", str(folder / "app.db"))
    monkeypatch.setenv("ROUNDTRIP_DUCKDB_EXTENSION_DIR", str(PROJECT_ROOT / ".duckdb_extensions"))
    return folder


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The one local Spark session (2 cores) of the test run, built like the jobs build theirs;
    its temp files and warehouse dir live under a temp folder."""
    import dataclasses

    from spark_jobs.session import SparkSettings, build_session

    settings = dataclasses.replace(
        SparkSettings.from_env(),
        master="local[2]",
        driver_memory="1g",
        temp_dir=tmp_path_factory.mktemp("spark-tmp"),
        shuffle_partitions=4,
    )
    session = build_session(settings, app_name="roundtrip-tests")
    yield session
    session.stop()
    stop_spark_jvm()


def stop_spark_jvm() -> None:
    """End the JVM pyspark started: it exits on its own only after Python has (its stdin
    closing), so the test run would end with it still running."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    if gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    gateway.shutdown()
    SparkContext._gateway = SparkContext._jvm = None
    if proc is not None:
        if proc.stdin:
            proc.stdin.close()  # the JVM watches its stdin: closed, it exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
