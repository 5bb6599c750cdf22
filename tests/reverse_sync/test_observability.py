"""What a `roundtrip sync` invocation tells the world, through the CLI against the session's
real Postgres and Redis: JSON logs (`--log-format json`), the results file of every invocation
(written whatever happens), and the notification hooks of a failed or blocked run (a shell
command reading the run's JSON on stdin, a webhook served by a local http.server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from reverse_etl.counts import FIELDS
from reverse_etl.selection import declared_syncs
from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.dev.services import free_port

from .conftest import Harness

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SEGMENTS = "t(user_id, email, segment, lifetime_value)"
SECRET = "pw-Obs3rv-51x"


def segments(*rows: str) -> str:
    return f"select * from (values {', '.join(rows)}) {SEGMENTS}"


ONE_GOOD_ONE_NULL_KEY = segments(
    "(1, 'a@example.com', 'regular', 1.00)", "(null, 'hidden@example.com', 'regular', 2.00)"
)


def sync_cli(h: Harness, manifest: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "ROUNDTRIP_DUCKDB_PATH": str(h.warehouse),
        "DBT_TARGET_PATH": str(manifest.parent),
        "ROUNDTRIP_POSTGRES_URL": h.postgres.url(),
        "ROUNDTRIP_REDIS_URL": h.redis.url(),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "reverse_etl", *args], env=full, cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def records(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line, each of which must be one JSON object."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "no log lines"
    parsed = [json.loads(line) for line in lines]
    for record in parsed:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
    return parsed


def results_file(h: Harness) -> Path:
    return h.warehouse.parent / "reverse_etl" / "run_results.json"


def by_sync(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["sync"]: entry for entry in document["results"]}


@pytest.fixture(autouse=True)
def _empty_redis(redis_client: redis.Redis) -> None:
    """Every test starts from an empty Redis database."""


# ---------------------------------------------------------------- JSON logs


def test_json_logs_are_one_object_per_line_with_the_sync_and_no_secret(
    harness: Harness, fixture_manifest: Path
) -> None:
    harness.model("segments", segments("(1, 'a@example.com', 'regular', 1.00)"))
    done = sync_cli(harness, fixture_manifest, {}, "run", "--select", "crm_segments", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    logged = records(done.stderr)
    [end] = [r for r in logged if r["message"].startswith("sync crm_segments: succeeded in ")]
    assert end["sync"] == "crm_segments" and end["level"] == "INFO" and end["logger"] == "reverse_etl.engine"
    assert "reverse syncs" in done.stdout  # the results table stays on stdout

    # the same as a setting, for a scheduler that sets it once
    listed = sync_cli(harness, fixture_manifest, {"ROUNDTRIP_LOG_FORMAT": "json"}, "list", "--select", "nope")
    assert listed.returncode == 1
    [error] = [r for r in records(listed.stderr) if r["level"] == "ERROR"]
    assert error["level"] == "ERROR" and "no sync named 'nope'" in error["message"] and "hint" in error

    # a server that is down, its URL carrying a password: the error is one record, redacted,
    # and --debug adds the traceback to it, redacted too
    down = {"ROUNDTRIP_POSTGRES_URL": f"postgresql://syncer:{SECRET}@127.0.0.1:{free_port()}/roundtrip"}
    for extra in ((), ("--debug",)):
        failed = sync_cli(
            harness, fixture_manifest, down, "run", "--select", "crm_segments", "--log-format", "json", *extra
        )
        assert failed.returncode == 1
        [error] = [r for r in records(failed.stderr) if r["level"] == "ERROR"]
        assert "cannot reach postgres" in error["message"] and error["hint"]
        assert ("Traceback" in error.get("exception", "")) == bool(extra)
        assert SECRET not in failed.stderr + failed.stdout + results_file(harness).read_text()


# ---------------------------------------------------------------- the results file


def test_every_invocation_leaves_its_results_file(harness: Harness, fixture_manifest: Path, tmp_path: Path) -> None:
    """One sync ends with rejects, one is blocked by its guard: both are in the file, with their
    counts, phases and history rows; rejected rows' values are not."""
    harness.model("segments", ONE_GOOD_ONE_NULL_KEY)
    args = ("run", "--select", "model:segments", "--exclude", "first_touch", "--log-format", "json")
    done = sync_cli(harness, fixture_manifest, {}, *args)
    assert done.returncode == 1, done.stderr
    text = results_file(harness).read_text()
    document = json.loads(text)
    assert document["command"] == "run" and document["exit_code"] == 1 and document["status"] == "failed"
    assert document["args"]["select"] == ["model:segments"] and document["args"]["exclude"] == ["first_touch"]
    assert document["started_at"] <= document["completed_at"] and document["elapsed_seconds"] > 0
    results = by_sync(document)
    assert set(results) == {"crm_segments", "profile_cache"}

    history = dict(harness.sql("select sync, run_id from reverse_etl.runs"))
    statuses = dict(harness.sql("select sync, status from reverse_etl.runs"))
    crm = results["crm_segments"]
    assert crm["status"] == statuses["crm_segments"] == "succeeded_with_rejects"
    assert crm["run_id"] == history["crm_segments"] and crm["attempts"] == 1
    assert crm["counts"] == dict.fromkeys(FIELDS, 0) | {"read": 2, "inserted": 1, "rejected": 1}
    assert {"read", "shape", "classify", "write", "commit"} <= crm["phases"].keys()
    assert all(isinstance(s, float) and s >= 0 for s in crm["phases"].values())
    blocked = results["profile_cache"]
    assert blocked["status"] == statuses["profile_cache"] == "blocked"
    assert blocked["run_id"] == history["profile_cache"]
    assert "max_reject_pct" in blocked["error"] and "--max-reject-pct" in blocked["hint"]
    assert "hidden@example.com" not in text  # counts, never row values

    # what the destinations hold agrees
    assert harness.sql("select user_id, segment from crm.segments") == [(1, "regular")]
    assert redis.Redis.from_url(harness.redis.url()).keys("profile:*") == []
    # the blocked sync's record in the JSON logs carries its error
    [logged] = [r for r in records(done.stderr) if r.get("sync") == "profile_cache" and r["level"] == "ERROR"]
    assert "max_reject_pct" in logged["error"]

    # --results chooses the file; the default one keeps the previous invocation's document
    chosen = tmp_path / "elsewhere" / "results.json"
    again = sync_cli(harness, fixture_manifest, {}, "run", "--sync", "crm_segments", "--results", str(chosen))
    assert again.returncode == 2  # the NULL key is still rejected
    assert by_sync(json.loads(chosen.read_text()))["crm_segments"]["counts"]["unchanged"] == 1
    assert json.loads(results_file(harness).read_text())["metadata"] == document["metadata"]
    assert not [p.name for p in results_file(harness).parent.iterdir() if p.name.endswith(".tmp")]


def test_a_failure_before_any_sync_still_writes_the_file_and_calls_the_hook(
    harness: Harness, fixture_manifest: Path, tmp_path: Path
) -> None:
    payload = tmp_path / "payload.json"
    env = {
        "ROUNDTRIP_POSTGRES_URL": f"postgresql://syncer:{SECRET}@127.0.0.1:{free_port()}/roundtrip",
        "ROUNDTRIP_SYNC_NOTIFY_COMMAND": f"cat > '{payload}'",
    }
    harness.model("segments", segments("(1, 'a@example.com', 'regular', 1.00)"))
    done = sync_cli(harness, fixture_manifest, env, "run", "--select", "tag:crm", "--json")
    assert done.returncode == 1
    document = json.loads(results_file(harness).read_text())
    assert "cannot reach postgres" in document["error"]
    results = by_sync(document)
    tagged = {s.name for s in declared_syncs(json.loads(fixture_manifest.read_text())) if "crm" in s.tags}
    assert set(results) == tagged and {r["status"] for r in results.values()} == {"failed"}
    assert json.loads(payload.read_text()) == document
    assert SECRET not in payload.read_text() + done.stderr + done.stdout


# ---------------------------------------------------------------- the hooks


def test_a_failed_run_calls_the_hook_command_with_its_json(
    harness: Harness, fixture_manifest: Path, tmp_path: Path
) -> None:
    payload = tmp_path / "payload.json"
    env = {"ROUNDTRIP_SYNC_NOTIFY_COMMAND": f"cat > '{payload}'"}
    harness.model("segments", segments("(1, 'a@example.com', 'regular', 1.00)", "(2, 'b@example.com', 'vip', 9.50)"))
    ok = sync_cli(harness, fixture_manifest, env, "run", "--select", "crm_segments")
    assert ok.returncode == 0, ok.stderr
    assert not payload.exists()  # a run that succeeds notifies nobody

    # the model loses a column: on_schema_change fail stops the run, nothing written
    harness.model("segments", "select user_id, email, segment from (" + segments("(1, 'a@x', 'gone', 1.00)") + ")")
    planned = sync_cli(harness, fixture_manifest, env, "run", "--select", "crm_segments", "--dry-run")
    assert planned.returncode == 1 and not payload.exists()  # a plan notifies nobody
    failed = sync_cli(harness, fixture_manifest, env, "run", "--select", "crm_segments")
    assert failed.returncode == 1
    sent = json.loads(payload.read_text())
    [entry] = sent["results"]
    assert entry["sync"] == "crm_segments" and entry["status"] == "failed" and "lifetime_value" in entry["error"]
    assert entry["run_id"] == harness.sql("select max(run_id) from reverse_etl.runs where status = 'failed'")[0][0]
    assert sent == json.loads(results_file(harness).read_text())  # the hook gets the results file
    assert harness.sql("select user_id, segment, lifetime_value::text from crm.segments order by 1") == [
        (1, "regular", "1.00"),
        (2, "vip", "9.50"),
    ]


class Recorder(BaseHTTPRequestHandler):
    """Keeps every POST; answers 500 under /broken, 204 elsewhere."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, self.headers.get("Content-Type"), json.loads(body)))  # type: ignore[attr-defined]
        self.send_response(500 if self.path.startswith("/broken") else 204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_webhooks_global_and_per_sync(
    harness: Harness, fixture_manifest: Path, tmp_path: Path, webhook: ThreadingHTTPServer
) -> None:
    """The global webhook gets the whole invocation; the sync's own hooks (meta.sync.notify,
    its token from the environment) get that sync's result alone."""
    port = webhook.server_address[1]
    own = tmp_path / "own.json"
    manifest = json.loads(fixture_manifest.read_text())
    exposure = manifest["exposures"]["exposure.retl_fixture.profile_cache"]
    meta = exposure.get("config", {}).get("meta") or exposure["meta"]
    meta["sync"]["notify"] = {
        "url": f"http://127.0.0.1:{port}/cache/${{CACHE_HOOK_TOKEN}}",
        "command": f"cat > '{own}'",
    }
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "manifest.json").write_text(json.dumps(manifest))
    env = {"ROUNDTRIP_SYNC_NOTIFY_URL": f"http://127.0.0.1:{port}/all", "CACHE_HOOK_TOKEN": "tok-Secr3t"}

    harness.model("segments", ONE_GOOD_ONE_NULL_KEY)
    done = sync_cli(
        harness, tmp_path / "target" / "manifest.json", env, "run", "--select", "crm_segments profile_cache"
    )
    assert done.returncode == 1, done.stderr
    received = {path: (kind, body) for path, kind, body in webhook.received}  # type: ignore[attr-defined]
    assert set(received) == {"/all", "/cache/tok-Secr3t"}
    assert {kind for kind, _ in received.values()} == {"application/json"}
    everything = received["/all"][1]
    assert everything == json.loads(results_file(harness).read_text())
    assert {e["sync"]: e["status"] for e in everything["results"]} == {
        "crm_segments": "succeeded_with_rejects",
        "profile_cache": "blocked",
    }
    [alone] = received["/cache/tok-Secr3t"][1]["results"]
    assert alone["sync"] == "profile_cache" and "max_reject_pct" in alone["error"]
    assert json.loads(own.read_text())["results"] == [alone]
    assert "tok-Secr3t" not in done.stderr  # a webhook's path is shown as …


def test_a_failing_hook_changes_nothing(
    harness: Harness, fixture_manifest: Path, tmp_path: Path, webhook: ThreadingHTTPServer
) -> None:
    harness.model("segments", ONE_GOOD_ONE_NULL_KEY)
    plain = sync_cli(harness, fixture_manifest, {}, "run", "--select", "profile_cache", "--json")
    assert plain.returncode == 1 and json.loads(plain.stdout)["status"] == "blocked"

    for url in (f"http://127.0.0.1:{free_port()}/closed", f"http://127.0.0.1:{webhook.server_address[1]}/broken"):
        env = {"ROUNDTRIP_SYNC_NOTIFY_URL": url, "ROUNDTRIP_SYNC_NOTIFY_COMMAND": "echo cannot-page >&2; exit 3"}
        done = sync_cli(harness, fixture_manifest, env, "run", "--select", "profile_cache", "--json")
        assert done.returncode == plain.returncode
        assert json.loads(done.stdout)["status"] == "blocked"
        assert "notify webhook of settings failed" in done.stderr
        assert "exit status 3: cannot-page" in done.stderr
        assert by_sync(json.loads(results_file(harness).read_text()))["profile_cache"]["status"] == "blocked"
    assert "answered HTTP 500" in done.stderr
    assert [s for (s,) in harness.sql("select status from reverse_etl.runs")] == ["blocked"] * 3
    assert redis.Redis.from_url(harness.redis.url()).keys("profile:*") == []


def test_an_interrupted_invocation_says_so_in_its_file_and_exit_status(
    harness: Harness, fixture_manifest: Path, tmp_path: Path
) -> None:
    """Ctrl-C while the sync waits for a warehouse another process holds: exit 130, the file
    says `interrupted` for each chosen sync, and nobody is paged for it."""
    import signal

    import duckdb

    harness.model("segments", segments("(1, 'a@example.com', 'regular', 1.00)"))
    payload = tmp_path / "payload.json"
    env = {
        **os.environ,
        "ROUNDTRIP_DUCKDB_PATH": str(harness.warehouse),
        "DBT_TARGET_PATH": str(fixture_manifest.parent),
        "ROUNDTRIP_POSTGRES_URL": harness.postgres.url(),
        "ROUNDTRIP_REDIS_URL": harness.redis.url(),
        "ROUNDTRIP_SYNC_NOTIFY_COMMAND": f"cat > '{payload}'",
    }
    holder = duckdb.connect(str(harness.warehouse))  # a `dbt build` holding the file
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "reverse_etl", "run", "--select", "crm_segments", "--wait", "60", "--log-format", "json"],
            env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        assert process.stderr is not None
        for line in process.stderr:  # until it waits for the warehouse
            if "is in use by" in line:
                break
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        holder.close()
    assert process.returncode == 130
    assert any(r["message"] == "interrupted" and r["level"] == "WARNING" for r in records(err))
    document = json.loads(results_file(harness).read_text())
    assert document["status"] == "interrupted" and document["exit_code"] == 130
    assert by_sync(document)["crm_segments"]["status"] == "interrupted"
    assert not payload.exists()
    assert harness.sql("select to_regclass('crm.segments') is null") == [(True,)]  # nothing written
