"""The package layers hold: the base imports nothing of its users, siblings stay independent.

    roundtrip.cli : benchmarks      the one CLI and the benchmarks (top)
    roundtrip.dev                   throwaway servers, emulators, sample data, the demo
    loaders | reverse_etl | spark_jobs   independent of each other
    roundtrip.core                  paths, errors, settings, CLI support, dbt, DuckDB, contract

The contract is declared in pyproject.toml ([tool.importlinter]) and checked by import-linter,
which reads every import statement, including the ones inside functions.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from roundtrip.core.paths import PROJECT_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(config: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = [str(LINT_IMPORTS), "--no-cache", *(["--config", str(config)] if config else [])]
    return subprocess.run(args, cwd=PROJECT_ROOT, capture_output=True, text=True)


def test_the_layers_are_kept() -> None:
    done = _lint()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_an_arrow_from_core_up_to_a_user_breaks_the_contract(tmp_path: Path) -> None:
    """The contract really bites: the same layers over a copy where core imports loaders."""
    root = tmp_path / "tree"
    for package in ("roundtrip/core", "roundtrip/dev", "loaders", "reverse_etl", "spark_jobs", "benchmarks"):
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    (root / "roundtrip" / "__init__.py").write_text("")
    (root / "roundtrip" / "cli.py").write_text("import loaders\n")
    (root / "roundtrip" / "core" / "paths.py").write_text("from loaders import jobs  # the wrong way up\n")
    (root / "loaders" / "jobs.py").write_text("from roundtrip.core import paths\n")
    contract = (PROJECT_ROOT / "pyproject.toml").read_text().split("[tool.importlinter]", 1)[1].split("[tool.mypy]")[0]
    config = tmp_path / "importlinter.toml"
    config.write_text("[tool.importlinter]" + textwrap.dedent(contract))
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(config)],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode != 0
    assert "roundtrip.core.paths -> loaders.jobs" in done.stdout
