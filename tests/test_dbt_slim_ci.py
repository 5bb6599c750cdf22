"""Slim CI (`make ci-slim STATE=...`): only a changed model and what is downstream of it are built.

The "main branch" is this project, built on the hand-written bronze set: its manifest is the
state, its DuckDB file the warehouse. The "pull request" is a copy of the project with one model
changed. `make ci-slim` in the copy must build and test exactly that model and its children
(run_results.json), with the change in their rows, and leave every other relation as the main
build wrote it. Both builds use one DuckDB file, as the CI workflow does with the main branch's
warehouse artifact: the unchanged parents (--defer) are the main build's relations.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from roundtrip.core.paths import PROJECT_ROOT
from tests import bronze_sample
from tests.dbt_support import DbtProject, base_environment, load_raw_tables, query_duckdb

# what a copy of the project needs to build (and run make)
PROJECT_FILES = ("dbt_project.yml", "Makefile", "models", "macros", "seeds", "snapshots", "analyses", "tests/dbt")
CHANGED = "recommendable_items"
# the pull request: items need more than 5 units in stock to be recommended
BEFORE, AFTER = "coalesce(stock, 0) > 0", "coalesce(stock, 0) > 5"


def _copy_project(destination: Path) -> Path:
    for name in PROJECT_FILES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name)
        else:
            destination.joinpath(name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    shutil.copytree(PROJECT_ROOT / "profiles", destination / "profiles", ignore=shutil.ignore_patterns(".user.yml"))
    (destination / ".venv").symlink_to(PROJECT_ROOT / ".venv")
    return destination


def _descendants(manifest: dict[str, Any], uid: str) -> set[str]:
    """The model and every model or snapshot downstream of it."""
    found, todo = {uid}, [uid]
    while todo:
        for child in manifest["child_map"].get(todo.pop(), []):
            if child.split(".")[0] in ("model", "snapshot") and child not in found:
                found.add(child)
                todo.append(child)
    return found


@pytest.fixture(scope="module")
def main_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The main branch built: (warehouse, state folder with its manifest.json)."""
    folder = tmp_path_factory.mktemp("slim-main")
    warehouse = folder / "warehouse.duckdb"
    load_raw_tables(warehouse, bronze_sample.all_raw_rows())
    DbtProject(folder / "state", base_environment(warehouse)).run("build")
    return warehouse, folder / "state"


@pytest.mark.slow  # a main build, then a slim build against its manifest: ~30 s
def test_ci_slim_builds_the_changed_model_and_its_children_only(main_build: tuple[Path, Path], tmp_path: Path) -> None:
    warehouse, state = main_build
    state_manifest = json.loads((state / "manifest.json").read_text())
    changed_uid = f"model.roundtrip.{CHANGED}"
    expected_models = _descendants(state_manifest, changed_uid)
    # the change reaches children (a mart and the serving views over it): the selection is tested
    assert changed_uid in expected_models and len(expected_models) > 2
    before = query_duckdb(warehouse, "select count(*) from marts.recommendable_items")[0][0]
    untouched = query_duckdb(warehouse, "select count(*), max(as_of) from marts.user_segments")

    project = _copy_project(tmp_path / "pull_request")
    model = project / "models" / "marts" / f"{CHANGED}.sql"
    assert BEFORE in model.read_text()
    model.write_text(model.read_text().replace(BEFORE, AFTER))

    target = tmp_path / "target"
    env = {
        **base_environment(warehouse),
        "DBT_TARGET_PATH": str(target),
        "DBT_LOG_PATH": str(target / "logs"),
    }
    done = subprocess.run(
        ["make", "--no-print-directory", "ci-slim", f"STATE={state}"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]

    results = json.loads((target / "run_results.json").read_text())["results"]
    status = {r["unique_id"]: r["status"] for r in results}
    built = {uid for uid in status if uid.split(".")[0] in ("model", "snapshot", "seed")}
    assert built == expected_models
    assert {status[uid] for uid in built} == {"success"}
    # the syncs that read them are selected too (dbt has nothing to run for an exposure)
    exposures = {uid: s for uid, s in status.items() if uid.startswith("exposure.")}
    reading = {
        uid
        for uid, exposure in state_manifest["exposures"].items()
        if set(exposure["depends_on"]["nodes"]) & expected_models
    }
    assert reading and exposures == dict.fromkeys(reading, "no-op")

    # the tests that ran are those of the built models, and all of theirs ran
    slim_manifest = json.loads((target / "manifest.json").read_text())
    tested = {uid for uid in status if uid.startswith(("test.", "unit_test."))}
    assert {status[uid] for uid in tested} == {"pass"}
    nodes = {**slim_manifest["nodes"], **slim_manifest.get("unit_tests", {})}
    assert tested, "the build ran the tests of the changed models"
    for uid in tested:
        assert set(nodes[uid]["depends_on"]["nodes"]) & expected_models, uid
    own_tests = {
        uid
        for uid, node in slim_manifest["nodes"].items()
        if node["resource_type"] == "test" and node.get("attached_node") in expected_models
    }
    assert own_tests <= tested

    # the change is in the warehouse; what was not selected is as the main build left it
    after = query_duckdb(warehouse, "select count(*), min(stock) from marts.recommendable_items")[0]
    assert after[0] < before and after[1] > 5
    assert query_duckdb(warehouse, "select count(*) from serving.recommendable_items_mv")[0][0] == after[0]
    assert query_duckdb(warehouse, "select count(*), max(as_of) from marts.user_segments") == untouched


def test_ci_slim_needs_a_state(tmp_path: Path) -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "ci-slim", f"STATE={tmp_path / 'nothing'}"],
        cwd=PROJECT_ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no " in done.stderr and "manifest.json" in done.stderr
