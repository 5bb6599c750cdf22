"""Rows of a model, streamed from the DuckDB warehouse in Arrow record batches.

DuckDB does the per-row work in SQL generated from the sync's settings (never from a model's
logic): it renames columns, flags rows whose key is NULL or shared by several rows (a window
count, so duplicate detection never holds keys in Python memory), and adds to each record

- ``__rt_key``: the record's identity in the sync state, as JSON (the primary key values, or
  for Redis the key the record is written under);
- ``__rt_fp``: an md5 fingerprint of exactly what is written, for change detection;
- ``__rt_rows``: how many model rows the record carries (Redis ``list`` values group rows);
- Redis only: ``__rt_target`` (the rendered key) and ``__rt_value`` (the JSON value).

Python sees one record batch at a time, so memory is bounded by ``batch_rows``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from string import Formatter
from typing import Any

import pyarrow as pa

from reverse_etl.errors import SyncError
from reverse_etl.spec import RESERVED_PREFIX, SyncSpec, key_template_fields
from roundtrip.paths import duckdb_path

log = logging.getLogger(__name__)
MEMORY_LIMIT_ENV, DEFAULT_MEMORY_LIMIT = "ROUNDTRIP_REVERSE_ETL_DUCKDB_MEMORY", "256MB"

KEY, FINGERPRINT, ROWS, TARGET, VALUE = "__rt_key", "__rt_fp", "__rt_rows", "__rt_target", "__rt_value"
REASON, ROW, ROW_KEY = "__rt_reason", "__rt_row", "__rt_row_key"
KEY_ROWS = "__rt_key_rows"


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def json_object(columns: list[str]) -> str:
    return f"to_json(struct_pack({', '.join(f'{quote(c)} := {quote(c)}' for c in columns)}))::varchar"


def key_template_sql(template: str) -> str:
    """``reco:{user_id}`` as a DuckDB expression; NULL when a field is NULL."""
    parts = []
    for text, field_name, _, _ in Formatter().parse(template):
        if text:
            parts.append(literal(text))
        if field_name:
            parts.append(f"cast({quote(field_name)} as varchar)")
    return " || ".join(parts)


class ModelSource:
    """Reads one sync's model; use as a context manager."""

    def __init__(self, spec: SyncSpec) -> None:
        self.spec = spec
        self.settings = spec.settings
        self.con: Any = None
        self.columns: list[str] = []

    def __enter__(self) -> ModelSource:
        from roundtrip.duckdb_extensions import connect

        path = duckdb_path()
        if not path.exists():
            raise SyncError(f"warehouse {path} not found: run the loaders and `dbt build` first")
        # DuckDB's sorts and window counts spill to disk beyond this, so the process stays small
        limit = os.environ.get(MEMORY_LIMIT_ENV, DEFAULT_MEMORY_LIMIT)
        if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", limit, re.IGNORECASE):
            raise SyncError(f"{MEMORY_LIMIT_ENV} must be a size such as 256MB, got {limit!r}")
        self.con = connect(path, read_only=True)
        try:
            self.con.execute(f"set memory_limit = '{limit}'")
            self.columns = [r[0] for r in self.con.execute(f"describe {self._projected()}").fetchall()]
        except Exception as exc:
            self.close()
            raise SyncError(
                f"sync {self.spec.name}: cannot read model {self.spec.model} ({self.spec.relation}): {exc}"
            ) from exc
        self._check_columns()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None

    # ---------------------------------------------------------------- SQL

    def _projected(self) -> str:
        mapping = self.settings.columns
        projection = ", ".join(f"{quote(s)} as {quote(d)}" for s, d in mapping.items()) if mapping else "*"
        return f"(select {projection} from {self.spec.relation})"

    def _check_columns(self) -> None:
        s = self.settings
        needed = {"primary key": s.primary_key, "order_by": s.order_by or []}
        if s.track_changes:
            needed["track_changes.column"] = [s.track_changes.column]
        if s.destination == "redis":
            needed["key template"] = key_template_fields(self.spec.target)
        for what, names in needed.items():
            missing = [n for n in names if n not in self.columns]
            if missing:
                raise SyncError(
                    f"sync {self.spec.name}: {what} column(s) {missing} not in model {self.spec.model} "
                    f"(columns: {', '.join(self.columns)})"
                )
        reserved = [c for c in self.columns if c.startswith(RESERVED_PREFIX)]
        if reserved:
            raise SyncError(
                f"sync {self.spec.name}: model columns {reserved} use the reserved prefix {RESERVED_PREFIX}"
            )
        if s.track_changes:
            clash = [c for c in (s.track_changes.previous, s.track_changes.changed_at) if c in self.columns]
            if clash:
                raise SyncError(f"sync {self.spec.name}: track_changes columns {clash} already come from the model")

    def _checked(self) -> str:
        """The projected rows with ``__rt_reason``: why a row is rejected, NULL when it is fine."""
        keys = self.settings.primary_key
        partition = ", ".join(quote(k) for k in keys)
        any_null = " or ".join(f"{quote(k)} is null" for k in keys)
        null_names = ", ".join(f"case when {quote(k)} is null then {literal(k)} end" for k in keys)
        return f"""
            with counted as (
                select *, count(*) over (partition by {partition}) as {KEY_ROWS} from {self._projected()}
            )
            select * exclude ({KEY_ROWS}),
                case
                    when {any_null} then 'NULL in key column(s): ' || concat_ws(', ', {null_names})
                    when {KEY_ROWS} > 1 then 'duplicate key: ' || {KEY_ROWS} || ' rows share it'
                end as {REASON}
            from counted"""

    def _state_key(self) -> str:
        if self.settings.destination == "redis":
            return f"to_json({key_template_sql(self.spec.target)})::varchar"
        return json_object(self.settings.primary_key)

    def rejected_sql(self) -> str:
        any_null = " or ".join(f"{quote(k)} is null" for k in self.settings.primary_key)
        return f"""
            select
                case when {any_null} then null else {self._state_key()} end as {KEY},
                {json_object(self.settings.primary_key)} as {ROW_KEY},
                {REASON},
                {json_object(self.columns)} as {ROW}
            from ({self._checked()})
            where {REASON} is not null
            order by {ROW_KEY}"""

    def records_sql(self) -> str:
        s = self.settings
        accepted = f"(select * exclude ({REASON}) from ({self._checked()}) where {REASON} is null)"
        if s.destination == "postgres":
            order = ", ".join(quote(k) for k in s.primary_key)  # same order in concurrent runs: no deadlocks
            return f"""
                select *, {self._state_key()} as {KEY}, md5({json_object(self.columns)}) as {FINGERPRINT},
                    1 as {ROWS}
                from {accepted}
                order by {order}"""
        target = key_template_sql(self.spec.target)
        if s.value == "object":
            value, grouping, rows = json_object(self.columns), "", "1"
        else:
            in_key = set(key_template_fields(self.spec.target))
            members = [c for c in self.columns if c not in in_key]
            order = ", ".join(quote(c) for c in (s.order_by or [k for k in s.primary_key if k not in in_key]))
            member = f"struct_pack({', '.join(f'{quote(c)} := {quote(c)}' for c in members)})"
            value = f"to_json(list({member} order by {order or '1'}))::varchar"
            grouping, rows = " group by 1", "count(*)"
        return f"""
            select {TARGET}, to_json({TARGET})::varchar as {KEY}, {VALUE}, md5({VALUE}) as {FINGERPRINT}, {ROWS}
            from (select {target} as {TARGET}, {value} as {VALUE}, {rows} as {ROWS} from {accepted}{grouping})
            order by {TARGET}"""

    # ---------------------------------------------------------------- streams

    def _stream(self, query: str) -> Iterator[pa.RecordBatch]:
        try:
            reader = self.con.execute(query).to_arrow_reader(self.settings.batch_rows)
        except Exception as exc:
            raise SyncError(f"sync {self.spec.name}: cannot read model {self.spec.model}: {exc}") from exc
        for batch in reader:
            if batch.num_rows:
                yield batch

    def rejected(self) -> Iterator[pa.RecordBatch]:
        """Rows with a NULL or duplicated key: ``__rt_key`` (NULL if the key has a NULL),
        ``__rt_row_key``, ``__rt_reason``, ``__rt_row`` (the row as JSON)."""
        return self._stream(self.rejected_sql())

    def records(self) -> Iterator[pa.RecordBatch]:
        """What to write, ordered by key: the model's columns (Postgres) or key and value
        (Redis), plus ``__rt_key``, ``__rt_fp`` and ``__rt_rows``."""
        return self._stream(self.records_sql())


def payload_columns(batch: pa.RecordBatch | pa.Table) -> list[str]:
    return [n for n in batch.schema.names if not n.startswith(RESERVED_PREFIX)]
