"""The loaders' own bookkeeping, kept as tables in the warehouse's ``_roundtrip`` schema.

- ``loader_state``: one watermark per (source, table), as typed JSON.
- ``file_manifest``: one row per file of a stream's landing folder that the loader has seen
  (path, size, fingerprint, content hash, status, rows, lines held back, and for a moved or
  duplicate file the path of the same content).
- ``file_quarantine``: lines (and whole files) that could not be read, with file, physical
  line, byte offset, reason and raw text.
- ``file_rejects``: values a file stream could not coerce to its declared type, with file and line.

They are written through the same ``Warehouse`` calls as the data, inside the same
transaction, so a watermark or a manifest row never claims rows that were not committed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa

from loaders.sources.lines import HeldBack, raw_text
from loaders.warehouse.base import STATE_SCHEMA, Warehouse

STATE_TABLE = "loader_state"
MANIFEST_TABLE = "file_manifest"
QUARANTINE_TABLE = "file_quarantine"
REJECTS_TABLE = "file_rejects"

# file_manifest.status
LOADED = "loaded"  # its rows are in the table (lines that could not be read are in the quarantine)
HELD_BACK = "held_back"  # the whole file could not be read: no row, one quarantine row
MOVED = "moved"  # loaded from `original_path`, then renamed: its rows now carry this path
DUPLICATE = "duplicate"  # the same content as `original_path`, which is still there: not loaded again
DELETED = "deleted"  # gone from the landing folder; its rows were kept (deleted_files: keep)
HAS_ROWS = (LOADED, MOVED, DELETED)
# the fingerprint of a file held back because it changed while it was read: no file has it, so
# the next run reads the file again whatever its content is then
READ_AGAIN = "read-again"

_TS = pa.timestamp("us", tz="UTC")
MANIFEST_SCHEMA = pa.schema(
    [
        ("stream", pa.string()),
        ("path", pa.string()),
        ("size", pa.int64()),
        ("fingerprint", pa.string()),
        ("rows", pa.int64()),
        ("loaded_at", _TS),
        ("content_hash", pa.string()),
        ("status", pa.string()),
        ("held_back", pa.int64()),
        ("original_path", pa.string()),
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        ("stream", pa.string()),
        ("source_file", pa.string()),
        ("fingerprint", pa.string()),
        ("source_line", pa.int64()),  # physical line, 1-based; NULL: the whole file
        ("byte_offset", pa.int64()),
        ("reason", pa.string()),
        ("raw_text", pa.string()),  # at most 1,000 bytes of the line, invalid UTF-8 as \xNN
        ("raw_bytes", pa.int64()),  # the line's full size
        ("held_at", _TS),
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


@dataclass(frozen=True, kw_only=True)
class ManifestEntry:
    path: str
    size: int
    fingerprint: str  # content checksum, or the object store's generation / ETag
    rows: int
    loaded_at: datetime
    content_hash: str | None = None  # "md5:<hex>": the same bytes under any name
    status: str = LOADED
    held_back: int = 0  # lines of the file in the quarantine
    original_path: str | None = None  # MOVED: where it was loaded from; DUPLICATE: the file it copies


def read_manifest(warehouse: Warehouse, stream: str) -> dict[str, ManifestEntry]:
    table = warehouse.read_table(STATE_SCHEMA, MANIFEST_TABLE)
    if table is None:
        return {}
    return {
        row["path"]: ManifestEntry(
            path=row["path"],
            size=row["size"],
            fingerprint=row["fingerprint"],
            rows=row["rows"],
            loaded_at=row["loaded_at"],
            content_hash=row.get("content_hash")
            or (row["fingerprint"] if str(row["fingerprint"]).startswith("md5:") else None),
            status=row.get("status") or LOADED,  # written before statuses existed: loaded
            held_back=row.get("held_back") or 0,
            original_path=row.get("original_path"),
        )
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


def forget_files(warehouse: Warehouse, stream: str, paths: list[str]) -> None:
    """Remove these files' manifest rows."""
    warehouse.delete_where(STATE_SCHEMA, MANIFEST_TABLE, "path", paths, scope={"stream": stream})


def replace_manifest(warehouse: Warehouse, stream: str, entries: list[ManifestEntry]) -> None:
    """The stream's manifest becomes exactly ``entries`` (catalog strategy)."""
    warehouse.delete_where(STATE_SCHEMA, MANIFEST_TABLE, "stream", [stream])
    warehouse.append(STATE_SCHEMA, MANIFEST_TABLE, [_manifest_rows(stream, entries)])


# ------------------------------------------------------------------ quarantine and rejects


def quarantine_rows(
    stream: str, source_file: str, fingerprint: str, held: list[HeldBack], held_at: datetime
) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "stream": stream,
                "source_file": source_file,
                "fingerprint": fingerprint,
                "source_line": h.line,
                "byte_offset": h.offset,
                "reason": h.reason,
                "raw_text": raw_text(h.raw),
                "raw_bytes": h.size,
                "held_at": held_at,
            }
            for h in held
        ],
        schema=QUARANTINE_SCHEMA,
    )


def record_quarantine(warehouse: Warehouse, rows: pa.Table) -> int:
    """Append held-back lines (``QUARANTINE_SCHEMA``)."""
    if rows.num_rows:
        warehouse.append(STATE_SCHEMA, QUARANTINE_TABLE, [rows])
    return rows.num_rows


def record_rejects(warehouse: Warehouse, rejects: pa.Table) -> int:
    """Append rejected values (``REJECTS_SCHEMA``); the loaded rows never hide them."""
    if rejects.num_rows:
        warehouse.append(STATE_SCHEMA, REJECTS_TABLE, [rejects])
    return rejects.num_rows


def forget_held_back(warehouse: Warehouse, stream: str, source_files: list[str]) -> None:
    """A file reloaded or gone: its quarantine rows and rejected values go with its old rows."""
    for table in (QUARANTINE_TABLE, REJECTS_TABLE):
        warehouse.delete_where(STATE_SCHEMA, table, "source_file", source_files, scope={"stream": stream})


def move_held_back(warehouse: Warehouse, stream: str, old: str, new: str) -> None:
    """A moved file's held-back lines and values follow it."""
    for table in (QUARANTINE_TABLE, REJECTS_TABLE):
        warehouse.update_where(STATE_SCHEMA, table, "source_file", old, new, scope={"stream": stream})


def read_held_back(warehouse: Warehouse, stream: str | None = None) -> list[dict[str, object]]:
    """Every held-back line, file and value (of one stream, or all), oldest file first: what
    ``python -m loaders quarantine`` prints."""
    found: list[dict[str, object]] = []
    quarantine = warehouse.read_table(STATE_SCHEMA, QUARANTINE_TABLE)
    for row in quarantine.to_pylist() if quarantine is not None else []:
        found.append(
            {
                "stream": row["stream"],
                "file": row["source_file"],
                "line": row["source_line"],
                "byte_offset": row["byte_offset"],
                "kind": "line" if row["source_line"] is not None else "file",
                "reason": row["reason"],
                "raw_text": row["raw_text"],
                "held_at": row["held_at"],
            }
        )
    rejects = warehouse.read_table(STATE_SCHEMA, REJECTS_TABLE)
    for row in rejects.to_pylist() if rejects is not None else []:
        found.append(
            {
                "stream": row["stream"],
                "file": row["source_file"],
                "line": row["source_line"],
                "byte_offset": None,
                "kind": "value",
                "reason": f"{row['column_name']} = {row['value']!r} is not a {row['expected_type']}",
                "raw_text": row["value"],
                "held_at": row["rejected_at"],
            }
        )
    found = [r for r in found if stream is None or r["stream"] == stream]
    return sorted(found, key=lambda r: (str(r["stream"]), str(r["file"]), r["line"] or 0, str(r["kind"])))
