"""The manifest of a target, parsed only when the project changed (roundtrip.core.dbt.ensure_manifest).

A tiny dbt project of its own in a temporary folder (one model, one sync), parsed by the real dbt:
each test asserts on the manifest file dbt wrote (its bytes, its time, what it says), not on the
function's own account of what it did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from roundtrip.core.dbt import (
    DbtParseError,
    dbt_command,
    dbt_environment,
    ensure_manifest,
    find_manifests,
    run_dbt,
)
from roundtrip.core.paths import PROJECT_ROOT

EXPOSURES = """\
version: 2
exposures:
  - name: things_sync
    type: application
    owner: {name: tests, email: tests@example.com}
    depends_on: [ref('things')]
    config:
      meta: {sync: {destination: postgres, target: crm.things, primary_key: [thing_id]}}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "project"
    (folder / "models").mkdir(parents=True)
    (folder / "dbt_project.yml").write_text(
        "name: tiny\nversion: '0.1.0'\nconfig-version: 2\nprofile: roundtrip\nmodel-paths: [models]\n"
    )
    (folder / "models" / "things.sql").write_text("select 1 as thing_id\n")
    (folder / "models" / "_exposures.yml").write_text(EXPOSURES)
    for name in [n for n in os.environ if n.startswith(("ROUNDTRIP_", "DBT_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ROUNDTRIP_DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    return folder


def _manifest(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text())


def _things(path: Path) -> dict:  # type: ignore[type-arg]
    return _manifest(path)["nodes"]["model.tiny.things"]


def test_parsed_once_then_reused_until_a_file_or_a_setting_changes(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "target"
    run_dbt(["parse"], target="duckdb", target_path=target, quiet=True, project_dir=project)
    manifest = target / "manifest.json"
    written = manifest.stat().st_mtime_ns

    reused = ensure_manifest("duckdb", project_dir=project, target_path=target)
    assert (reused.path, reused.parsed) == (manifest, False)
    assert "unchanged" in reused.reason
    assert manifest.stat().st_mtime_ns == written, "nothing was parsed"
    # a password never changes a manifest: it is not part of the fingerprint (nor stored)
    monkeypatch.setenv("ROUNDTRIP_PG_PASSWORD", "another secret")
    assert not ensure_manifest("duckdb", project_dir=project, target_path=target).parsed
    assert "another secret" not in (target / "roundtrip_manifest.json").read_text()
    # nor another target's settings (the demo's Postgres URL, set or not)
    monkeypatch.setenv("ROUNDTRIP_WAREHOUSE_URL", "postgresql://dw@warehouse.example:5433/dw")
    assert not ensure_manifest("duckdb", project_dir=project, target_path=target).parsed

    (project / "models" / "things.sql").write_text("select 2 as thing_id\n")
    changed = ensure_manifest("duckdb", project_dir=project, target_path=target)
    assert changed.parsed and "models/things.sql changed" in changed.reason
    assert "select 2" in _things(manifest)["raw_code"]

    # the warehouse file names the relation's database: its setting is part of the fingerprint
    monkeypatch.setenv("ROUNDTRIP_DUCKDB_PATH", str(tmp_path / "elsewhere.duckdb"))
    moved = ensure_manifest("duckdb", project_dir=project, target_path=target)
    assert moved.parsed and "$ROUNDTRIP_DUCKDB_PATH changed" in moved.reason
    assert _things(manifest)["database"] == "elsewhere"

    # a YAML typo: dbt's own message, the manifest left as it was
    before = manifest.read_bytes()
    exposures = project / "models" / "_exposures.yml"
    exposures.write_text(EXPOSURES.replace("type: application", "type: [application"))
    capfd.readouterr()
    with pytest.raises(DbtParseError, match="dbt could not parse the project for target duckdb"):
        ensure_manifest("duckdb", project_dir=project, target_path=target)
    shown = capfd.readouterr().err
    assert "Syntax error near line" in shown and "_exposures.yml" in shown
    assert manifest.read_bytes() == before

    # an exposure on a model that does not exist: dbt's message names both
    exposures.write_text(EXPOSURES.replace("ref('things')", "ref('thingz')"))
    with pytest.raises(DbtParseError):
        ensure_manifest("duckdb", project_dir=project, target_path=target)
    assert "depends on a node named 'thingz' which was not found" in capfd.readouterr().err

    exposures.write_text(EXPOSURES)  # fixed: the same files as the last parse, reused again
    assert not ensure_manifest("duckdb", project_dir=project, target_path=target).parsed
    assert manifest.read_bytes() == before


def test_the_manifest_plain_dbt_wrote_for_postgres_is_found(project: Path, tmp_path: Path) -> None:
    """`dbt build --target postgres` (no roundtrip around it, as CI runs it) writes target/:
    that manifest is used for postgres while it is newer than the project's files; a duckdb
    run never takes it."""
    target = tmp_path / "target"
    command = dbt_command(["--quiet", "parse"], target="postgres", target_path=target, project_dir=project)
    subprocess.run(command, cwd=project, env=dbt_environment(), check=True)
    plain = target / "manifest.json"
    assert _manifest(plain)["metadata"]["adapter_type"] == "postgres"

    assert find_manifests("postgres", target, project) == [plain]
    assert find_manifests("duckdb", target, project) == [], "another adapter's manifest is never offered"
    found = ensure_manifest("postgres", project_dir=project, target_path=target)
    assert (found.path, found.parsed) == (plain, False)
    assert "written by dbt" in found.reason

    # edited after dbt wrote it: parsed again, into the target's own folder
    (project / "models" / "things.sql").write_text("select 3 as thing_id\n")
    fresh = ensure_manifest("postgres", project_dir=project, target_path=target)
    assert (fresh.path, fresh.parsed) == (target / "postgres" / "manifest.json", True)
    assert "models/things.sql changed" in fresh.reason
    assert "select 3" in _things(fresh.path)["raw_code"] and "select 1" in _things(plain)["raw_code"]
    assert find_manifests("postgres", target, project)[0] == fresh.path, "the newest first"


def test_make_syncs_shows_dbts_message_when_the_project_does_not_parse(tmp_path: Path) -> None:
    """Through the Make target a user calls: a YAML typo in the exposures file of a copy of
    this project prints dbt's own error, not only make's `Error 1`."""
    copy = tmp_path / "copy"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (PROJECT_ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            (copy / name).write_bytes((PROJECT_ROOT / name).read_bytes())
    (copy / ".venv").symlink_to(sys.prefix)  # this environment, wherever the project is
    (copy / ".duckdb_extensions").symlink_to(PROJECT_ROOT / ".duckdb_extensions")
    exposures = copy / "models" / "marts" / "_marts__exposures.yml"
    exposures.write_text(exposures.read_text().replace("    type: application", "    type: [application", 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUNDTRIP_", "DBT_"))}
    env |= {"PYTHONPATH": str(copy), "ROUNDTRIP_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        ["make", "--no-print-directory", "-o", "setup", "syncs"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "Syntax error near line" in done.stderr and "marts/_marts__exposures.yml" in done.stderr, done.stderr
    assert "error: dbt could not parse the project for target duckdb" in done.stderr
    assert not (copy / "target" / "manifest.json").exists()
