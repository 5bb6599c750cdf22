"""Review before writing: the dry run's field-level diff, and `sync plan` / `sync apply`, which
refuses a plan whose mart, state or destination moved since it was made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from roundtrip.core.paths import PROJECT_ROOT

from .conftest import Harness

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SEGMENTS = "t(user_id, email, segment, lifetime_value, order_count)"


def segments(*rows: tuple[int, str, str]) -> str:
    values = ", ".join(f"({u}, '{e}', '{s}', {u}.50::decimal(18, 2), {u})" for u, e, s in rows)
    return f"select * from (values {values}) {SEGMENTS}"


def cli(h: Harness, manifest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ROUNDTRIP_DUCKDB_PATH": str(h.warehouse),
        "DBT_TARGET_PATH": str(manifest.parent),
        "ROUNDTRIP_POSTGRES_URL": h.postgres.url(),
        "ROUNDTRIP_REDIS_URL": h.redis.url(),
    }
    return subprocess.run(
        [sys.executable, "-m", "reverse_etl", *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def lines(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {r["sync"]: r for r in map(json.loads, done.stdout.splitlines())}


def crm(h: Harness) -> set[tuple[Any, ...]]:
    return set(h.sql("select user_id, email, segment from crm.segments"))


def test_a_dry_run_shows_each_changed_field_old_and_new(harness: Harness, fixture_manifest: Path) -> None:
    harness.model("segments", segments((1, "a@x", "regular"), (2, "b@x", "regular"), (3, "c@x", "regular")))
    assert cli(harness, fixture_manifest, "run", "--sync", "crm_segments").returncode == 0
    assert cli(harness, fixture_manifest, "run", "--sync", "profile_cache").returncode == 0
    harness.model("segments", segments((1, "a2@x", "gold"), (2, "b@x", "gold"), (3, "c@x", "regular")))
    planned = lines(cli(harness, fixture_manifest, "run", "--sync", "all", "--dry-run", "--json"))
    for sync, first_key in (("crm_segments", {"user_id": 1}), ("profile_cache", "profile:1")):
        fields = planned[sync]["fields"]
        assert fields["columns"] == {"segment": 2, "email": 1}
        first = fields["sample"][0]
        assert first["key"] == first_key
        assert first["changes"] == {
            "email": {"old": "a@x", "new": "a2@x"},
            "segment": {"old": "regular", "new": "gold"},
        }
    text = cli(harness, fixture_manifest, "run", "--sync", "crm_segments", "--dry-run")
    assert "updates change, per column: segment 2, email 1" in text.stdout
    assert crm(harness) == {(1, "a@x", "regular"), (2, "b@x", "regular"), (3, "c@x", "regular")}  # nothing written


def test_apply_runs_a_plan_and_refuses_a_stale_one(harness: Harness, fixture_manifest: Path, tmp_path: Path) -> None:
    harness.model("segments", segments((1, "a@x", "regular"), (2, "b@x", "regular")))
    assert cli(harness, fixture_manifest, "run", "--sync", "crm_segments").returncode == 0
    harness.model("segments", segments((1, "a@x", "gold"), (2, "b@x", "regular"), (3, "c@x", "new_user")))
    plan = tmp_path / "plan.json"
    made = cli(harness, fixture_manifest, "plan", "--sync", "crm_segments", "--out", str(plan))
    assert made.returncode == 0, made.stderr
    written = json.loads(plan.read_text())
    entry = {s["sync"]: s for s in written["syncs"]}["crm_segments"]
    assert (entry["counts"]["inserted"], entry["counts"]["updated"]) == (1, 1) and set(entry["seal"]) == {
        "model", "state", "destination"
    }  # fmt: skip
    assert crm(harness) == {(1, "a@x", "regular"), (2, "b@x", "regular")}  # a plan writes nothing

    applied = cli(harness, fixture_manifest, "apply", str(plan), "--json")
    assert applied.returncode == 0, applied.stderr
    assert lines(applied)["crm_segments"]["status"] == "succeeded"
    assert crm(harness) == {(1, "a@x", "gold"), (2, "b@x", "regular"), (3, "c@x", "new_user")}
    again = cli(harness, fixture_manifest, "apply", str(plan), "--json")  # the state moved: its own run
    assert again.returncode == 1 and lines(again)["crm_segments"]["status"] == "stale"

    for move in ("mart", "destination"):
        assert cli(harness, fixture_manifest, "plan", "--sync", "crm_segments", "--out", str(plan)).returncode == 0
        if move == "mart":
            harness.model("segments", segments((1, "a@x", "at_risk"), (2, "b@x", "regular"), (3, "c@x", "new_user")))
        else:
            harness.sql("update crm.segments set email = 'typed@x' where user_id = 2")
        before = crm(harness)
        stale = cli(harness, fixture_manifest, "apply", str(plan), "--json")
        result = lines(stale)["crm_segments"]
        assert stale.returncode == 1 and result["status"] == "stale", stale.stdout + stale.stderr
        assert ("the mart" if move == "mart" else "the destination") in result["error"]
        if move == "destination":  # a hand edit of the destination is not called a change of the mart
            assert "the mart" not in result["error"], result["error"]
        assert crm(harness) == before  # nothing written

    redis_plan = tmp_path / "redis.json"
    assert cli(harness, fixture_manifest, "run", "--sync", "profile_cache").returncode == 0
    harness.model("segments", segments((1, "a@x", "gold"), (2, "b@x", "gold")))
    assert cli(harness, fixture_manifest, "plan", "--sync", "profile_cache", "--out", str(redis_plan)).returncode == 0
    redis.Redis.from_url(harness.redis.url()).set("profile:2", '{"edited": true}')  # a key the plan would write
    stale = cli(harness, fixture_manifest, "apply", str(redis_plan), "--json")
    assert lines(stale)["profile_cache"]["status"] == "stale"
    assert json.loads(redis.Redis.from_url(harness.redis.url()).get("profile:2")) == {"edited": True}
