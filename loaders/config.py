"""Typed loader configuration (``loaders/loaders.yml``), resolved at the entry point.

``${VAR}`` and ``${VAR:-default}`` in the YAML are replaced by the project's settings
(``roundtrip.core.settings``: ``${ROUNDTRIP_APP_DB}`` is the resolved path, defaults included)
and, for any other name, by the environment; so paths, URLs and schemas follow the settings
without code changes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, field_validator, model_validator

from loaders.errors import LoaderError
from roundtrip.core.contract import BRONZE_FIELDS
from roundtrip.core.settings import Settings, env_name, load_settings

_ENV_PATTERN = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")

# SQLite columns read as time: epoch seconds / milliseconds or ISO-8601 text -> UTC timestamps,
# ISO dates (YYYY-MM-DD) -> dates
TimestampKind = Literal["epoch_s", "epoch_ms", "iso", "date"]
MAX_LINE_BYTES = 64 << 20
MAX_COLUMNS = 1_600
_FILE_TYPE = re.compile(
    r"bigint|integer|double|boolean|date|timestamp|timestamptz|varchar|decimal\(\s*\d+\s*,\s*\d+\s*\)"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SqliteTableConfig(_Strict):
    name: str
    primary_key: list[str]
    cursor: str | None = None  # incremental when set: only rows with cursor > stored watermark
    timestamps: dict[str, TimestampKind] = Field(default_factory=dict)  # column -> how to read it
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
    # or: the bronze record of a contract stream (roundtrip.core.contract), as `columns`
    contract: Literal["orders", "clicks"] | None = None
    # bronze keeps every field as text, as sent; false keeps the types the file carries (Parquet)
    as_text: bool = True
    # optional coercion, column -> DuckDB type; unparseable values go to _roundtrip.file_rejects
    types: dict[str, str] = Field(default_factory=dict)
    # a file gone from the landing folder: `keep` its rows in the table (bronze is a history), or
    # `drop` them with it (transactional strategy; catalog always mirrors the folder)
    deleted_files: Literal["keep", "drop"] = "keep"
    # a line longer than this (JSON lines, CSV) is held back with its offset, read in constant
    # memory; "64MiB", "512 KiB" or a number of bytes
    max_line_bytes: ByteSize = Field(default=ByteSize(MAX_LINE_BYTES), gt=0)
    # a CSV header or the JSON fields of a stream without declared columns: more columns than
    # this hold the file back (declared columns are the limit when there are some). 1,600 is what
    # every target holds (PostgreSQL's limit; BigQuery holds 10,000)
    max_columns: int = Field(default=MAX_COLUMNS, gt=0)

    @model_validator(mode="after")
    def _contract_columns(self) -> FileStreamConfig:
        if self.contract is not None:
            if self.columns is not None:
                raise ValueError("give either `contract` or `columns`, not both")
            self.columns = list(BRONZE_FIELDS[self.contract])
        if not self.as_text and self.format != "parquet":
            raise ValueError("`as_text: false` keeps Parquet's types; JSON lines and CSV are text (use `types`)")
        return self

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


class BigQueryTableConfig(_Strict):
    """One table (or view) of any project, read through the Storage Read API."""

    name: str  # project.dataset.table
    target_table: str | None = None  # default: the table's name, sanitized
    columns: list[str] | None = None  # source names; None: every column (keys and cursor always read)
    filter: str | None = None  # a BigQuery SQL predicate applied by BigQuery (row restriction)
    primary_key: list[str]  # the MERGE keys (source names)
    cursor: str | None = None  # TIMESTAMP, DATETIME, DATE or INT64: incremental when set
    # re-read this far behind the watermark for rows that arrive late: 2h, 30m, 1d, 90s (time
    # cursors) or a number (INT64 cursors); default none
    lookback: str | int | None = None

    @field_validator("name")
    @classmethod
    def _table_id(cls, name: str) -> str:
        from roundtrip.core.bigquery_read import TableId

        return str(TableId.parse(name))


class BigQuerySourceConfig(_Strict):
    target_schema: str
    # a view's query job writes its result here (project.dataset; the table expires after a day
    # and is dropped after the read); default: BigQuery's anonymous result table
    query_dataset: str | None = None
    tables: list[BigQueryTableConfig]


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
    bigquery: dict[str, BigQuerySourceConfig] = Field(default_factory=dict)
    exports: dict[str, ExportConfig] = Field(default_factory=dict)


def _setting_values(settings: Settings) -> dict[str, str]:
    """``ROUNDTRIP_*`` name -> resolved value, for every setting that has one."""
    values = {}
    for name in Settings.model_fields:
        value = settings.secret(name)
        if value is not None:
            values[env_name(name)] = str(value)
    return values


def _expand(text: str, settings: Settings) -> str:
    values = {**os.environ, **_setting_values(settings)}
    return _ENV_PATTERN.sub(lambda m: values.get(m.group(1)) or m.group(2) or "", text)


def load_config(path: Path | None = None, settings: Settings | None = None) -> LoadersConfig:
    settings = settings or load_settings()
    path = path or settings.loaders_config
    try:
        text = path.read_text()
    except OSError as exc:
        raise LoaderError(f"cannot read loader configuration {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(_expand(text, settings))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LoaderError(
            f"loader configuration {path}{where}: not valid YAML ({problem})",
            hint="check the indentation and quoting around that line",
        ) from None
    try:
        return LoadersConfig.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'top level'}: {e['msg']}" for e in exc.errors())
        raise LoaderError(f"invalid loader configuration {path}: {problems}") from None
