"""Run dbt as a subprocess of the project's own environment (its progress shows as usual)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from roundtrip.errors import RoundtripError
from roundtrip.paths import PROJECT_ROOT

log = logging.getLogger(__name__)


def dbt_executable() -> str:
    beside_python = Path(sys.executable).parent / "dbt"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("dbt")
    if not found:
        raise RoundtripError("dbt is not installed in this environment: run `make setup`")
    return found


def dbt_command(
    args: Sequence[str],
    target: str | None = None,
    target_path: Path | None = None,
    quiet: bool = False,
    project_dir: Path = PROJECT_ROOT,
) -> list[str]:
    """The argv of ``dbt <args>`` for this project and its ``profiles/``.

    ``target_path`` moves dbt's output (manifest, compiled SQL) and logs elsewhere, so that
    tests and parallel runs do not share ``target/``. ``project_dir`` runs another dbt project
    (tests use small fixture projects) with the same ``profiles/``.
    """
    command = [
        dbt_executable(),
        *(["--quiet"] if quiet else []),
        *args,
        "--project-dir",
        str(project_dir),
        "--profiles-dir",
        str(PROJECT_ROOT / "profiles"),
    ]
    if target:
        command += ["--target", target]
    if target_path:
        command += ["--target-path", str(target_path), "--log-path", str(target_path / "logs")]
    return command


def run_dbt(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    target: str | None = None,
    target_path: Path | None = None,
    quiet: bool = False,
    project_dir: Path = PROJECT_ROOT,
) -> None:
    """Run ``dbt <args>`` (see ``dbt_command``) with the given extra environment."""
    command = dbt_command(args, target, target_path, quiet, project_dir)
    full_env = {**os.environ, **(env or {})}
    log.info("running %s", " ".join(["dbt", *args] + (["--target", target] if target else [])))
    completed = subprocess.run(command, cwd=project_dir, env=full_env)
    if completed.returncode != 0:
        raise RoundtripError(
            f"`dbt {' '.join(args)}` failed with exit code {completed.returncode} (see its output above)"
        )
