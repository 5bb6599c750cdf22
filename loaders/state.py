"""The loaders' own bookkeeping, kept as tables in the warehouse's ``_roundtrip`` schema.

- ``loader_state``: one watermark per (source, table), as typed JSON.
- ``file_manifest``: one row per loaded file (stream, path, size, fingerprint, rows, loaded_at).
- ``file_rejects``: values a file stream could not coerce, with file and line.

They are written through the same ``Warehouse`` calls as the data, inside the same
transaction, so a watermark or a manifest row never claims rows that were not committed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa

from loaders.warehouse.base import STATE_SCHEMA, Warehouse

STATE_TABLE = "loader_state"
MANIFEST_TABLE = "file_manifest"
REJECTS_TABLE = "file_rejects"

_TS = pa.timestamp("us", tz="UTC")
MANIFEST_SCHEMA = pa.schema(
    [
        ("stream", pa.string()),
        ("path", pa.string()),
        ("size", pa.int64()),
        ("fingerprint", pa.string()),
        ("rows", pa.int64()),
        ("loaded_at", _TS),
    ]
)
REJECTS_SCHEMA = pa.schema(
    [
        ("stream", pa.string()),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
        ("column_name", pa.string()),
        ("value", pa.string()),
        ("expected_type", pa.string()),
        ("rejected_at", _TS),
    ]
)


def now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------ watermarks


def encode_watermark(value: object) -> str:
    """Typed JSON, so that the next run compares like with like (a timestamp stays a timestamp)."""
    if isinstance(value, datetime):
        return json.dumps({"type": "datetime", "value": value.isoformat()})
    if isinstance(value, date):
        return json.dumps({"type": "date", "value": value.isoformat()})
    if isinstance(value, Decimal):
        return json.dumps({"type": "decimal", "value": str(value)})
    return json.dumps({"type": "json", "value": value})


def decode_watermark(text: str) -> object:
    stored = json.loads(text)
    kind, value = stored["type"], stored["value"]
    if kind == "datetime":
        return datetime.fromisoformat(value)
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "decimal":
        return Decimal(value)
    return value


def get_watermark(warehouse: Warehouse, key: str) -> object | None:
    table = warehouse.read_table(STATE_SCHEMA, STATE_TABLE)
    if table is None:
        return None
    for row in table.to_pylist():
        if row["key"] == key:
            return decode_watermark(row["value"])
    return None


def set_watermark(warehouse: Warehouse, key: str, value: object) -> None:
    row = pa.table(
        {"key": [key], "value": [encode_watermark(value)], "updated_at": pa.array([now()], _TS)},
    )
    warehouse.merge(STATE_SCHEMA, STATE_TABLE, [row], ["key"])


# ------------------------------------------------------------------ file manifest


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    size: int
    fingerprint: str  # content checksum, or the object store's generation / ETag
    rows: int
    loaded_at: datetime


def read_manifest(warehouse: Warehouse, stream: str) -> dict[str, ManifestEntry]:
    table = warehouse.read_table(STATE_SCHEMA, MANIFEST_TABLE)
    if table is None:
        return {}
    return {
        row["path"]: ManifestEntry(row["path"], row["size"], row["fingerprint"], row["rows"], row["loaded_at"])
        for row in table.to_pylist()
        if row["stream"] == stream
    }


def _manifest_rows(stream: str, entries: list[ManifestEntry]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"stream": stream, **e.__dict__} for e in entries],
        schema=MANIFEST_SCHEMA,
    )


def record_files(warehouse: Warehouse, stream: str, entries: list[ManifestEntry]) -> None:
    """Add or update these files' manifest rows."""
    if entries:
        warehouse.merge(STATE_SCHEMA, MANIFEST_TABLE, [_manifest_rows(stream, entries)], ["stream", "path"])


def replace_manifest(warehouse: Warehouse, stream: str, entries: list[ManifestEntry]) -> None:
    """The stream's manifest becomes exactly ``entries`` (catalog strategy)."""
    warehouse.delete_where(STATE_SCHEMA, MANIFEST_TABLE, "stream", [stream])
    warehouse.append(STATE_SCHEMA, MANIFEST_TABLE, [_manifest_rows(stream, entries)])


def record_rejects(warehouse: Warehouse, rejects: pa.Table) -> int:
    """Append rejected values (``REJECTS_SCHEMA``); the loaded rows never hide them."""
    if rejects.num_rows:
        warehouse.append(STATE_SCHEMA, REJECTS_TABLE, [rejects])
    return rejects.num_rows
