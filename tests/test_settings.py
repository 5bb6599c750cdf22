"""One settings module: every ROUNDTRIP_* variable declared once, resolved at the entry points,
secrets never shown, and the README's table generated from the declarations."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from roundtrip.core.errors import ConfigError
from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.core.settings import Settings, env_name, load_settings, markdown_table, postgres_dbt_env

# what dbt's profile reads that the entry points derive from ROUNDTRIP_WAREHOUSE_URL
DERIVED_FOR_DBT = {
    "ROUNDTRIP_PG_HOST",
    "ROUNDTRIP_PG_PORT",
    "ROUNDTRIP_PG_USER",
    "ROUNDTRIP_PG_PASSWORD",
    "ROUNDTRIP_PG_DATABASE",
}
README_START, README_END = "<!-- settings:start -->", "<!-- settings:end -->"


def _tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    return [PROJECT_ROOT / f for f in listed.stdout.split() if not f.endswith((".md", ".csv"))]


def test_every_variable_the_project_reads_is_declared_once() -> None:
    declared = {env_name(f) for f in Settings.model_fields}
    found: dict[str, set[str]] = {}
    for path in _tracked_files():
        if path.is_file():
            for name in re.findall(r"\bROUNDTRIP_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="ignore")):
                found.setdefault(name, set()).add(str(path.relative_to(PROJECT_ROOT)))
    unknown = {name: sorted(files) for name, files in found.items() if name not in declared | DERIVED_FOR_DBT}
    assert not unknown, f"undeclared settings (add them to roundtrip/core/settings.py): {unknown}"


def test_no_module_reads_a_setting_behind_the_settings_back() -> None:
    # reads only: a program may set a variable for the processes it starts (the demo does)
    reads = re.compile(r"(environ\.get|getenv)\(\s*['\"]ROUNDTRIP_|environ\[\s*['\"]ROUNDTRIP_\w+['\"]\s*\](?!\s*=)")
    offenders = [
        str(p.relative_to(PROJECT_ROOT))
        for p in _tracked_files()
        if p.suffix == ".py" and p.is_file() and reads.search(p.read_text())
    ]
    assert offenders == []


def test_the_readme_table_is_the_generated_one() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert README_START in readme and README_END in readme
    table = readme.split(README_START, 1)[1].split(README_END, 1)[0].strip()
    assert table == markdown_table(), "regenerate it: roundtrip settings --markdown"


def test_paths_follow_the_data_dir_and_blank_means_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ROUNDTRIP_DUCKDB_PATH", "ROUNDTRIP_APP_DB", "ROUNDTRIP_LANDING_PATH", "ROUNDTRIP_POSTGRES_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ROUNDTRIP_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("ROUNDTRIP_APP_DB", "")  # empty: the default, as a shell user expects
    s = load_settings()
    assert s.duckdb_path == tmp_path / "d" / "warehouse.duckdb"
    assert s.app_db == tmp_path / "d" / "app.db"
    assert s.landing_dir == tmp_path / "d" / "landing"
    assert s.warehouse_url is None and s.dbt_env() == {}


def test_the_postgres_url_is_the_default_of_the_warehouse_and_the_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUNDTRIP_WAREHOUSE_URL", raising=False)
    monkeypatch.delenv("ROUNDTRIP_CATALOG_URL", raising=False)
    monkeypatch.setenv("ROUNDTRIP_POSTGRES_URL", "postgresql://crm:s%40cret@db.example:6543/ops")
    s = load_settings()
    assert s.secret("catalog_url") == s.secret("warehouse_url") == "postgresql://crm:s%40cret@db.example:6543/ops"
    assert s.dbt_env() == {
        "ROUNDTRIP_PG_HOST": "db.example",
        "ROUNDTRIP_PG_PORT": "6543",
        "ROUNDTRIP_PG_USER": "crm",
        "ROUNDTRIP_PG_PASSWORD": "s@cret",
        "ROUNDTRIP_PG_DATABASE": "ops",
    }
    monkeypatch.setenv("ROUNDTRIP_WAREHOUSE_URL", "postgresql://dw@warehouse:5432/analytics")
    assert load_settings().dbt_env()["ROUNDTRIP_PG_HOST"] == "warehouse"
    assert "s%40cret" not in repr(load_settings()) and "s@cret" not in str(load_settings())


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUNDTRIP_TARGET", "snowflake")
    with pytest.raises(ConfigError, match="ROUNDTRIP_TARGET"):
        load_settings()
    monkeypatch.setenv("ROUNDTRIP_TARGET", "duckdb")
    monkeypatch.setenv("ROUNDTRIP_REVERSE_ETL_DUCKDB_MEMORY", "lots")
    with pytest.raises(ConfigError, match="ROUNDTRIP_REVERSE_ETL_DUCKDB_MEMORY"):
        load_settings()
    with pytest.raises(ConfigError, match="postgresql://"):
        postgres_dbt_env("mysql://u:pw@h/db")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("ROUNDTRIP_REDIS_URL", "127.0.0.1:52901", "expected a URL such as redis://host:6379/0"),
        ("ROUNDTRIP_REDIS_URL", "http://127.0.0.1:6379", "expected a URL such as redis://host:6379/0"),
        ("ROUNDTRIP_REDIS_URL", "redis://127.0.0.1:port/0", "the port of 'redis://127.0.0.1:port/0' is not a number"),
        (
            "ROUNDTRIP_REDIS_URL",
            "redis://:hunter2@127.0.0.1:6379/db",
            "the database of 'redis://:***@127.0.0.1:6379/db'",
        ),
        ("ROUNDTRIP_REDIS_URL", "redis:///0", "no host in 'redis:///0'"),
        ("ROUNDTRIP_POSTGRES_URL", "localhost:5432", "expected a URL such as postgresql://user@host:5432/database"),
        ("ROUNDTRIP_WAREHOUSE_URL", "mysql://u:hunter2@h/db", "got 'mysql://u:***@h/db'"),
        ("ROUNDTRIP_CATALOG_URL", "catalog-db:5432", "a SQLAlchemy URL"),
    ],
)
def test_a_malformed_server_url_names_the_setting_and_the_form_it_needs(
    variable: str, value: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert f"invalid setting {variable}: " in str(caught.value) and says in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_well_formed_server_urls_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    good = {
        "ROUNDTRIP_REDIS_URL": "rediss://default:pw@cache.example:6380/2",
        "ROUNDTRIP_POSTGRES_URL": "postgres://crm@db.example/ops",
        "ROUNDTRIP_WAREHOUSE_URL": "postgresql:///analytics?host=/var/run/postgresql",
        "ROUNDTRIP_CATALOG_URL": "mysql+pymysql://reader:pw@catalog:3306/catalog",
    }
    for name, value in good.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.secret("redis_url") == good["ROUNDTRIP_REDIS_URL"]
    assert settings.secret("catalog_url") == good["ROUNDTRIP_CATALOG_URL"]


def test_settings_command_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"ROUNDTRIP_POSTGRES_URL": "postgresql://crm:hunter2@db.example/ops", "ROUNDTRIP_BQ_TOKEN": "ya29.tok3n"}
    done = subprocess.run(
        [sys.executable, "-m", "roundtrip", "settings", "--json"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env={**dict(__import__("os").environ), **env},
    )
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout and "ya29.tok3n" not in done.stdout
    assert "postgresql://crm:***@db.example/ops" in done.stdout
