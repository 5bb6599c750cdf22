"""Typed loader configuration (``loaders/loaders.yml``), resolved at the entry point.

``${VAR}`` and ``${VAR:-default}`` in the YAML are replaced from the environment, so paths and
URLs follow ``ROUNDTRIP_*`` settings without code changes. ``ROUNDTRIP_APP_DB``,
``ROUNDTRIP_LANDING_PATH`` and ``ROUNDTRIP_EXPORT_PATH`` default to their places under
``ROUNDTRIP_DATA_DIR``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loaders.errors import LoaderError
from roundtrip.paths import PROJECT_ROOT

DEFAULT_CONFIG = PROJECT_ROOT / "loaders" / "loaders.yml"
_ENV_PATTERN = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")

TimestampKind = Literal["epoch_s", "epoch_ms", "iso"]
_FILE_TYPE = re.compile(
    r"bigint|integer|double|boolean|date|timestamp|timestamptz|varchar|decimal\(\s*\d+\s*,\s*\d+\s*\)"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SqliteTableConfig(_Strict):
    name: str
    primary_key: list[str]
    cursor: str | None = None  # incremental when set: only rows with cursor > stored watermark
    timestamps: dict[str, TimestampKind] = Field(default_factory=dict)
    delete_propagation: bool = False  # delete warehouse rows whose key left the source


class SqliteSourceConfig(_Strict):
    path: str
    target_schema: str = "raw_app"
    tables: list[SqliteTableConfig]


class SqlTableConfig(_Strict):
    name: str
    primary_key: list[str]
    cursor: str | None = None


class SqlSourceConfig(_Strict):
    url: str  # SQLAlchemy URL; postgresql:// and mysql:// get this project's drivers (psycopg, PyMySQL)
    source_schema: str | None = None  # None: the database's default schema (SQLite: main)
    reader: Literal["sqlalchemy", "duckdb"] = "sqlalchemy"  # duckdb: Postgres through DuckDB's extension
    target_schema: str
    tables: list[SqlTableConfig]


class FileStreamConfig(_Strict):
    path: str  # folder; local, gs://, s3:// (any fsspec URL)
    storage_options: dict[str, Any] = Field(default_factory=dict)  # passed to fsspec, e.g. {token: anon}
    format: Literal["jsonl", "csv", "parquet"] = "jsonl"
    strategy: Literal["transactional", "catalog"] = "transactional"
    target_schema: str = "bronze"
    table: str
    columns: list[str] | None = None  # expected source fields, in order; others are an error
    # bronze keeps every field as text, as sent; false keeps the types the file carries (Parquet)
    as_text: bool = True
    # optional coercion, column -> DuckDB type; unparseable values go to _roundtrip.file_rejects
    types: dict[str, str] = Field(default_factory=dict)

    @field_validator("types")
    @classmethod
    def _known_types(cls, types: dict[str, str]) -> dict[str, str]:
        for column, type_ in types.items():
            if not _FILE_TYPE.fullmatch(type_.strip().lower()):
                raise ValueError(
                    f"column {column!r}: type {type_!r} is not one of bigint, integer, double, boolean, "
                    "date, timestamp, timestamptz, varchar, decimal(p, s)"
                )
        return types


class ExportTableConfig(_Strict):
    name: str
    columns: list[str] | None = None  # the columns to export, in order; None: all of them


class ExportConfig(_Strict):
    """Warehouse tables -> Snappy Parquet under ``{destination}/{YYYYMMDD}/{table}/``."""

    destination: str  # gs://bucket[/prefix], s3://bucket[/prefix] or a local folder
    dataset: str  # the schema (DuckDB, Postgres) or dataset (BigQuery) holding the tables
    tables: list[ExportTableConfig]
    storage_options: dict[str, Any] = Field(default_factory=dict)  # fsspec options (DuckDB and Postgres)
    # BigQuery writes one file per table when true ({table}.parquet), else shards (part-*.parquet);
    # a single file is limited to 1 GB by BigQuery
    single_file: bool = False


class LoadersConfig(_Strict):
    sqlite: dict[str, SqliteSourceConfig] = Field(default_factory=dict)
    sql: dict[str, SqlSourceConfig] = Field(default_factory=dict)
    files: dict[str, FileStreamConfig] = Field(default_factory=dict)
    exports: dict[str, ExportConfig] = Field(default_factory=dict)


def _path_defaults() -> dict[str, str]:
    """Project paths that follow ROUNDTRIP_DATA_DIR (see roundtrip.paths)."""
    from roundtrip import paths

    return {
        "ROUNDTRIP_APP_DB": str(paths.app_sqlite_path()),
        "ROUNDTRIP_LANDING_PATH": str(paths.landing_dir()),
        "ROUNDTRIP_EXPORT_PATH": str(paths.data_dir() / "export"),
    }


def _expand(text: str) -> str:
    values = {**_path_defaults(), **os.environ}
    return _ENV_PATTERN.sub(lambda m: values.get(m.group(1), m.group(2) or ""), text)


def load_config(path: Path | None = None) -> LoadersConfig:
    path = path or Path(os.environ.get("ROUNDTRIP_LOADERS_CONFIG", DEFAULT_CONFIG))
    try:
        raw = yaml.safe_load(_expand(path.read_text()))
    except OSError as exc:
        raise LoaderError(f"cannot read loader configuration {path}: {exc}") from exc
    try:
        return LoadersConfig.model_validate(raw or {})
    except ValidationError as exc:
        raise LoaderError(f"invalid loader configuration {path}:\n{exc}") from exc
