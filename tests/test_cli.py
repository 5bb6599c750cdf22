"""One CLI (``roundtrip``) over the packages' own, which keep working as ``python -m``; Spark
job files run alone without importing themselves twice; one error path for every command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from roundtrip.core.paths import PROJECT_ROOT

ROUNDTRIP = [str(Path(sys.executable).with_name("roundtrip"))]


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})},
        timeout=120,
    )


def _commands(help_text: str) -> set[str]:
    """Command names listed in a typer --help screen."""
    block = help_text.split("Commands", 1)[1]
    return set(re.findall(r"^│ ([a-z][a-z0-9-]+) ", block, re.MULTILINE))


def test_roundtrip_has_every_subcommand() -> None:
    done = _run([*ROUNDTRIP, "--help"])
    assert done.returncode == 0, done.stderr
    assert {"load", "sync", "spark", "demo", "services", "generate", "bench", "dbt", "settings"} <= _commands(
        done.stdout
    )


@pytest.mark.parametrize(("sub", "module"), [("load", "loaders"), ("sync", "reverse_etl"), ("spark", "spark_jobs")])
def test_subcommands_are_the_python_m_forms(sub: str, module: str) -> None:
    via_roundtrip = _run([*ROUNDTRIP, sub, "--help"])
    via_module = _run([sys.executable, "-m", module, "--help"])
    assert via_roundtrip.returncode == via_module.returncode == 0
    assert _commands(via_roundtrip.stdout) == _commands(via_module.stdout)
    assert len(_commands(via_module.stdout)) >= 3


@pytest.mark.parametrize("job", ["bronze_to_silver", "silver_to_gold"])
def test_a_job_file_runs_alone_and_loads_once(job: str) -> None:
    """As spark-submit runs it: the file is __main__; nothing imports it again as a module."""
    probe = (
        "import runpy, sys\n"
        "code = 0\n"
        f"sys.argv = ['{job}.py', '--help']\n"
        "try:\n"
        f"    runpy.run_path('spark_jobs/{job}.py', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        f"print('LOADED-TWICE' if 'spark_jobs.{job}' in sys.modules else 'ONCE', code)\n"
    )
    done = _run([sys.executable, "-c", probe])
    assert done.returncode == 0, done.stderr
    assert "--date" in done.stdout and "--start" in done.stdout
    assert done.stdout.strip().endswith("ONCE 0")


def test_a_yaml_error_is_one_line_with_the_line_number(tmp_path: Path) -> None:
    config = tmp_path / "loaders.yml"
    config.write_text("files:\n  orders:\n    path: /tmp/x\n   format: jsonl\n")  # bad indentation on line 4
    done = _run([sys.executable, "-m", "loaders", "files", "--config", str(config)])
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and "line 4" in lines[0] and str(config) in " ".join(lines)
    assert len(lines) <= 3  # the error, its hint

    debug = _run([sys.executable, "-m", "loaders", "files", "--config", str(config), "--debug"])
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_a_refused_postgres_is_one_line_without_the_password() -> None:
    env = {"ROUNDTRIP_TARGET": "postgres", "ROUNDTRIP_WAREHOUSE_URL": "postgresql://dw:hunter2@127.0.0.1:9/dw"}
    done = _run([*ROUNDTRIP, "load", "sql"], env=env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr + done.stdout
    first = next(line for line in done.stderr.splitlines() if line.strip())
    assert first.startswith("error:") and "Postgres" in first


def test_a_bad_setting_is_one_line_naming_it() -> None:
    done = _run([sys.executable, "-m", "spark_jobs", "auto", "--plan"], env={"ROUNDTRIP_SPARK_THRESHOLD_ROWS": "lots"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "ROUNDTRIP_SPARK_THRESHOLD_ROWS" in done.stderr.splitlines()[0]
    snowflake = _run([sys.executable, "-m", "spark_jobs", "auto", "--plan", "--target", "snowflake"])
    assert snowflake.returncode == 2 and "snowflake" in snowflake.stderr
