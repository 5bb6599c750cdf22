"""Named connections: one project syncing to two Postgres servers and two Redis servers by name,
through the CLI, with a connections file whose secrets come from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.dev.services import LocalPostgres, LocalRedis, PostgresEndpoint, RedisEndpoint

from .conftest import Harness

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SEGMENTS = "t(user_id, email, segment, lifetime_value, order_count)"


@pytest.fixture(scope="module")
def second_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresEndpoint, RedisEndpoint]]:
    """A second Postgres (the CRM's) and a second Redis (a cache), apart from the session's."""
    folder = tmp_path_factory.mktemp("second")
    pg, rd = LocalPostgres(folder), LocalRedis(folder)
    try:
        yield pg.start(), rd.start()
    finally:
        rd.stop()
        pg.stop()


CONNECTIONS = """
state: app
connections:
  app:
    type: postgres
    url: ${APP_PG_URL}
  crm:
    type: postgres
    url: ${CRM_PG_URL}
  sessions:
    type: redis
    url: ${SESSIONS_REDIS_URL}
  cache:
    type: redis
    url: ${CACHE_REDIS_URL:-redis://127.0.0.1:1/0}
"""


def manifest_with_named_destinations(fixture_manifest: Path, folder: Path) -> Path:
    """The fixture project's manifest with four syncs of `segments`, one to each connection."""
    manifest = json.loads(fixture_manifest.read_text())
    exposures = manifest["exposures"]
    base = exposures["exposure.retl_fixture.crm_segments"]
    redis_base = exposures["exposure.retl_fixture.profile_cache"]

    def named(name: str, template: dict[str, Any], destination: str, target: str) -> dict[str, Any]:
        copy = json.loads(json.dumps(template))
        sync = (copy.get("config", {}).get("meta") or copy["meta"])["sync"]
        sync.update(destination=destination, target=target)
        sync.pop("track_changes", None)
        copy.update(name=name, unique_id=f"exposure.retl_fixture.{name}")
        return copy

    manifest["exposures"] = {
        f"exposure.retl_fixture.{n}": named(n, t, d, target)
        for n, t, d, target in [
            ("to_app", base, "app", "crm.segments_app"),
            ("to_crm", base, "crm", "crm.segments"),
            ("to_sessions", redis_base, "sessions", "session:{user_id}"),
            ("to_cache", redis_base, "cache", "cache:{user_id}"),
        ]
    }
    (folder / "target").mkdir()
    (folder / "target" / "manifest.json").write_text(json.dumps(manifest))
    (folder / "connections.yml").write_text(CONNECTIONS)
    return folder / "target" / "manifest.json"


def cli(harness: Harness, manifest: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "ROUNDTRIP_DUCKDB_PATH": str(harness.warehouse),
        "DBT_TARGET_PATH": str(manifest.parent),
        "ROUNDTRIP_SYNC_CONNECTIONS": str(manifest.parent.parent / "connections.yml"),
        **env,
    }
    full.pop("ROUNDTRIP_POSTGRES_URL", None)
    full.pop("ROUNDTRIP_REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "reverse_etl", *args], env=full, cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def mart_rows(n: int, version: str = "v1") -> str:
    values = ", ".join(f"({i}, 'u{i}@x', '{version}', {i}.50::decimal(18, 2), {i})" for i in range(n))
    return f"select * from (values {values}) {SEGMENTS}"


def test_one_project_syncs_to_two_postgres_and_two_redis_servers_by_name(
    harness: Harness, fixture_manifest: Path, tmp_path: Path, second_servers: tuple[PostgresEndpoint, RedisEndpoint]
) -> None:
    crm_pg, cache_redis = second_servers
    manifest = manifest_with_named_destinations(fixture_manifest, tmp_path)
    env = {
        "APP_PG_URL": harness.postgres.url(),
        "CRM_PG_URL": crm_pg.url(),
        "SESSIONS_REDIS_URL": harness.redis.url(),
        "CACHE_REDIS_URL": cache_redis.url(),
    }
    listed = cli(harness, manifest, env, "connections", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["connection"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert {n: (r["type"], r["status"], r["role"]) for n, r in rows.items()} == {
        "app": ("postgres", "ok", "state, destination"),
        "cache": ("redis", "ok", "destination"),
        "crm": ("postgres", "ok", "destination"),
        "sessions": ("redis", "ok", "destination"),
    }

    harness.model("segments", mart_rows(20))
    ran = cli(harness, manifest, env, "run", "--sync", "all", "--json")
    assert ran.returncode == 0, ran.stderr
    assert {r["sync"]: (r["status"], r["inserted"]) for r in map(json.loads, ran.stdout.splitlines())} == {
        n: ("succeeded", 20) for n in ("to_app", "to_crm", "to_sessions", "to_cache")
    }
    expected = {(i, f"u{i}@x", "v1") for i in range(20)}
    with psycopg.connect(crm_pg.url()) as crm:  # the CRM's own server holds its rows, and no state
        assert set(crm.execute("select user_id, email, segment from crm.segments").fetchall()) == expected
        assert crm.execute("select to_regclass('reverse_etl.syncs') is null").fetchone() == (True,)
    assert set(harness.sql("select user_id, email, segment from crm.segments_app")) == expected
    assert harness.sql("select to_regclass('crm.segments')") == [(None,)]  # not on the state's server
    assert {r[0] for r in harness.sql("select sync from reverse_etl.syncs")} == {
        "to_app",
        "to_crm",
        "to_sessions",
        "to_cache",
    }
    sessions, cache = redis.Redis.from_url(harness.redis.url()), redis.Redis.from_url(cache_redis.url())
    assert len(sessions.keys("session:*")) == 20 and not sessions.keys("cache:*")
    assert len(cache.keys("cache:*")) == 20 and not cache.keys("session:*")

    # a change and a kill -9 after the CRM's write: its write commits apart from the state, with
    # write-ahead marks, so the next run (the mart moved back) leaves no wrong row
    harness.model("segments", mart_rows(20, "v2"))
    killed = cli(harness, manifest, env | {"ROUNDTRIP_TEST_CRASH_AT": "written"}, "run", "--sync", "to_crm")
    assert killed.returncode == -9
    harness.model("segments", mart_rows(20))
    again = cli(harness, manifest, env, "run", "--sync", "all", "--json")
    assert again.returncode == 0, again.stderr
    with psycopg.connect(crm_pg.url()) as crm:
        assert set(crm.execute("select user_id, email, segment from crm.segments").fetchall()) == expected
    verified = cli(harness, manifest, env, "verify", "--sync", "all", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    down = cli(harness, manifest, env | {"CACHE_REDIS_URL": "redis://127.0.0.1:1/0"}, "connections", "--json")
    assert down.returncode == 1
    assert {r["connection"]: r["status"] for r in map(json.loads, down.stdout.splitlines())}["cache"] == "failed"


def test_a_destination_that_names_no_connection_fails_alone(
    harness: Harness, fixture_manifest: Path, tmp_path: Path
) -> None:
    manifest = manifest_with_named_destinations(fixture_manifest, tmp_path)
    data = json.loads(manifest.read_text())
    exposure = data["exposures"]["exposure.retl_fixture.to_cache"]
    (exposure.get("config", {}).get("meta") or exposure["meta"])["sync"]["destination"] = "nowhere"
    manifest.write_text(json.dumps(data))
    env = {
        "APP_PG_URL": harness.postgres.url(),
        "CRM_PG_URL": harness.postgres.url(),
        "SESSIONS_REDIS_URL": harness.redis.url(),
    }
    listed = cli(harness, manifest, env, "list", "--json")
    rows = {r["sync"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert (
        rows["to_cache"]["mode"] == "invalid" and "'nowhere' is not a declared connection" in rows["to_cache"]["error"]
    )
    assert listed.returncode == 1
