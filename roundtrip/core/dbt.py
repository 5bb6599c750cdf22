"""Run dbt as a subprocess of the project's own environment (its progress shows as usual).

Every run gets the settings that dbt's profile cannot derive itself (the Postgres warehouse's
``ROUNDTRIP_PG_*`` from ``ROUNDTRIP_WAREHOUSE_URL``) and no colour codes when its output is
not a terminal (piped logs of ``make demo``, CI).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from roundtrip.core.errors import RoundtripError
from roundtrip.core.paths import PROFILES_DIR, PROJECT_ROOT

log = logging.getLogger(__name__)


def dbt_executable() -> str:
    beside_python = Path(sys.executable).parent / "dbt"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("dbt")
    if not found:
        raise RoundtripError("dbt is not installed in this environment", hint="run `make setup`")
    return found


def colours_wanted() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


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
        *([] if colours_wanted() else ["--no-use-colors"]),
        *(["--quiet"] if quiet else []),
        *args,
        "--project-dir",
        str(project_dir),
        "--profiles-dir",
        str(project_dir / "profiles" if (project_dir / "profiles" / "profiles.yml").exists() else PROFILES_DIR),
    ]
    if target:
        command += ["--target", target]
    if target_path:
        command += ["--target-path", str(target_path), "--log-path", str(target_path / "logs")]
    return command


def dbt_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, the derived dbt settings, then ``extra``."""
    from roundtrip.core.settings import load_settings

    return {**os.environ, **load_settings().dbt_env(), **(extra or {})}


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
    log.info("running %s", " ".join(["dbt", *args] + (["--target", target] if target else [])))
    completed = subprocess.run(command, cwd=project_dir, env=dbt_environment(env))
    if completed.returncode != 0:
        raise RoundtripError(
            f"`dbt {' '.join(args)}` failed with exit code {completed.returncode} (see its output above)"
        )
