"""What a job run reads and writes, resolved once at the entry point (CLI flags, then environment).

Paths may be local folders or any URL Spark's Hadoop layer knows (``s3a://``, ``gs://``,
``hdfs://``, ``abfss://``) on a cluster; locally they default to folders under ``data/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlparse

from roundtrip.core.settings import load_settings
from spark_jobs.errors import SparkJobError

BronzeFormat = Literal["jsonl", "csv", "parquet"]
FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")

CATALOG_PATH_ENV = "ROUNDTRIP_SPARK_CATALOG_PATH"
CATALOG_URL_ENV = "ROUNDTRIP_CATALOG_URL"
CATALOG_TABLE = "catalog.items"


@dataclass(frozen=True)
class DateWindow:
    """The ``event_date`` partitions a run rewrites: ``[start, end]``, or every date when open."""

    start: date | None = None
    end: date | None = None

    def __post_init__(self) -> None:
        if (self.start is None) != (self.end is None):
            raise SparkJobError("give both --start and --end (or --date for one day)")
        if self.start and self.end and self.start > self.end:
            raise SparkJobError(f"--start {self.start} is after --end {self.end}")

    @classmethod
    def from_options(cls, day: str | None, start: str | None, end: str | None) -> DateWindow:
        if day and (start or end):
            raise SparkJobError("use either --date or --start/--end, not both")
        if day:
            one = _parse_date(day, "--date")
            return cls(one, one)
        return cls(_parse_date(start, "--start") if start else None, _parse_date(end, "--end") if end else None)

    @property
    def is_full(self) -> bool:
        return self.start is None

    def __str__(self) -> str:
        if self.start is None:
            return "every date"
        return str(self.start) if self.start == self.end else f"{self.start} .. {self.end}"


def _parse_date(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise SparkJobError(f"{option} {text!r} is not a date (YYYY-MM-DD)") from None


@dataclass(frozen=True)
class CatalogSource:
    """Where the item catalog comes from: Postgres over JDBC (production) or a Parquet copy."""

    jdbc_url: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    table: str = CATALOG_TABLE
    parquet_path: str | None = None

    @classmethod
    def from_postgres_url(cls, url: str, table: str = CATALOG_TABLE) -> CatalogSource:
        """``postgresql://user:password@host:port/db?sslmode=...`` -> a JDBC URL plus credentials."""
        parsed = urlparse(url)
        if parsed.scheme not in ("postgres", "postgresql"):
            raise SparkJobError(f"{CATALOG_URL_ENV} must be a postgresql:// URL, got scheme {parsed.scheme!r}")
        host = parsed.hostname or "localhost"
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        query = urlencode(parse_qsl(parsed.query))
        jdbc = f"jdbc:postgresql://{host}:{parsed.port or 5432}{parsed.path or '/'}" + (f"?{query}" if query else "")
        return cls(
            jdbc_url=jdbc,
            user=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            table=table,
        )

    @classmethod
    def from_env(cls) -> CatalogSource:
        settings = load_settings()
        if settings.spark_catalog_path:
            return cls(parquet_path=settings.spark_catalog_path)
        url = settings.secret("catalog_url")  # defaults to ROUNDTRIP_POSTGRES_URL
        if not url:
            raise SparkJobError(
                f"no item catalog: set {CATALOG_URL_ENV} (the catalog's Postgres, read over JDBC) "
                f"or {CATALOG_PATH_ENV} (a Parquet copy of catalog.items)"
            )
        return cls.from_postgres_url(url)

    def describe(self) -> str:
        """Where, without the password."""
        return f"parquet {self.parquet_path}" if self.parquet_path else f"jdbc {self.jdbc_url} table {self.table}"


@dataclass(frozen=True)
class JobConfig:
    landing: str  # holds orders/ and clicks/ (dt=YYYY-MM-DD/ folders inside)
    output: str  # silver/ and gold/ tables, one folder each
    catalog: CatalogSource
    window: DateWindow = DateWindow()
    fmt: BronzeFormat = "jsonl"

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise SparkJobError(f"bronze format {self.fmt!r} is not one of {', '.join(FORMATS)}")

    def bronze_path(self, stream: str) -> str:
        return f"{self.landing.rstrip('/')}/{stream}"

    def table_path(self, layer: str, table: str) -> str:
        return f"{self.output.rstrip('/')}/{layer}/{table}"


def _location(value: str) -> str:
    """URLs stay as they are; local paths become absolute."""
    return value if "://" in value else str(Path(value).resolve())


def resolve_landing(landing: str | None = None) -> str:
    return _location(landing or str(load_settings().landing_path))


def default_output() -> str:
    return _location(str(load_settings().spark_output))


def resolve_output(output: str | None = None) -> str:
    """Where Spark's silver/ and gold/ tables are: given, else ROUNDTRIP_SPARK_OUTPUT (absolute)."""
    return _location(output) if output else default_output()


def resolve_format(landing: str, fmt: str | None = None) -> BronzeFormat:
    """The landing files' format: given, else ROUNDTRIP_LANDING_FORMAT, else detected from them."""
    from spark_jobs.landing import detect_format

    chosen = fmt or load_settings().landing_format or detect_format(landing)
    if chosen not in FORMATS:
        raise SparkJobError(f"bronze format {chosen!r} is not one of {', '.join(FORMATS)}")
    return chosen  # type: ignore[return-value]


def resolve(
    window: DateWindow,
    landing: str | None = None,
    output: str | None = None,
    fmt: str | None = None,
    catalog: CatalogSource | None = None,
) -> JobConfig:
    """The run's configuration: explicit values win, then ROUNDTRIP_* settings, then defaults
    (the format: detected from the landing files)."""
    bronze = resolve_landing(landing)
    return JobConfig(
        landing=bronze,
        output=resolve_output(output),
        catalog=catalog or CatalogSource.from_env(),
        window=window,
        fmt=resolve_format(bronze, fmt),
    )
