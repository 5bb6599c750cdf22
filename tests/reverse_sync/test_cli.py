"""`python -m reverse_etl` as a user runs it: JSON output, exit statuses, status, list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from roundtrip.core.paths import PROJECT_ROOT

from .conftest import Harness

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SEGMENTS = "t(user_id, email, segment, lifetime_value)"


def cli(harness: Harness, manifest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ROUNDTRIP_DUCKDB_PATH": str(harness.warehouse),
        "DBT_TARGET_PATH": str(manifest.parent),
        "ROUNDTRIP_POSTGRES_URL": harness.postgres.url(),
        "ROUNDTRIP_REDIS_URL": harness.redis.url(),
    }
    return subprocess.run(
        [sys.executable, "-m", "reverse_etl", *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True
    )


def json_lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_cli_run_dry_run_status_and_exit_codes(harness: Harness, fixture_manifest: Path) -> None:
    listed = json_lines(cli(harness, fixture_manifest, "list", "--json"))
    assert {r["sync"]: r["mode"] for r in listed}["queue_a"] == "insert_only"
    assert {r["sync"]: r["then refresh"] for r in listed}["serving_items"] == "all_item_ids_mv,items_mv"

    harness.model(
        "segments",
        f"select * from (values (1, 'a@example.com', 'regular', 1.00), (null, 'b@example.com', 'regular', 2.00)) {SEGMENTS}",
    )
    done = cli(harness, fixture_manifest, "run", "--sync", "crm_segments", "--json")
    assert done.returncode == 2, done.stderr  # it ran, but rejected a row
    [result] = json_lines(done)
    assert {k: result[k] for k in ("sync", "status", "read", "inserted", "rejected")} == {
        "sync": "crm_segments",
        "status": "succeeded_with_rejects",
        "read": 2,
        "inserted": 1,
        "rejected": 1,
    }
    assert result["rejections"] == [
        {"key": {"user_id": None}, "reason": "NULL in key column(s): user_id",
         "row": {"user_id": None, "email": "b@example.com", "segment": "regular", "lifetime_value": 2.0}}
    ]  # fmt: skip

    harness.model("segments", f"select * from (values (1, 'a@example.com', 'at_risk', 1.00)) {SEGMENTS}")
    planned = cli(harness, fixture_manifest, "run", "--sync", "crm_segments", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "would update {'user_id': 1}" in planned.stdout and "nothing written" in planned.stdout
    assert harness.sql("select segment from crm.segments") == [("regular",)]

    done = cli(harness, fixture_manifest, "run", "--sync", "crm_segments", "--json")
    assert done.returncode == 0 and json_lines(done)[0]["updated"] == 1

    status = json_lines(cli(harness, fixture_manifest, "status", "--sync", "crm_segments", "--json"))
    assert [(r["status"], r["updated"], r["rejected"]) for r in status] == [
        ("succeeded", 1, 0),
        ("succeeded_with_rejects", 0, 1),
    ]
    latest = cli(harness, fixture_manifest, "status")
    assert latest.returncode == 0 and "crm_segments" in latest.stdout

    unknown = cli(harness, fixture_manifest, "run", "--sync", "nope")
    assert unknown.returncode == 1 and "no sync named 'nope'" in unknown.stderr
