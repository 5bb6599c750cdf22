"""Selected columns of a relation -> one Snappy Parquet file, written by DuckDB's ``COPY``.

The DuckDB warehouse copies from its own tables, the PostgreSQL warehouse through DuckDB's
postgres extension (``postgres_scan``). The destination path and every value go in as bound
parameters and every identifier through the one quoting function, so a name or a path with
``'``, ``"`` or ``;`` is data, never SQL. ``gs://`` and ``s3://`` destinations are written
through the same fsspec filesystems the file loader reads with.
"""

from __future__ import annotations

from typing import Any

from loaders.errors import LoaderError
from loaders.warehouse.base import ParquetExport
from roundtrip.core.sql import quote as q


def copy_to_parquet(con: Any, source: str, params: dict[str, Any], export: ParquetExport) -> tuple[str, int]:
    """``COPY (select <columns> from <source>) TO '<folder>/<table>.parquet'``: (that path, rows).
    ``source`` is a quoted relation or a table function whose values are in ``params``."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(export.folder, **export.storage_options)
    if "://" in export.folder:
        names = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        if not set(names) & set(con.list_filesystems()):
            con.register_filesystem(fs)
    else:
        fs.makedirs(path, exist_ok=True)
    columns = ", ".join(q(c) for c in export.columns) if export.columns else "*"
    target = f"{export.folder}/{export.table}.parquet"
    try:
        row = con.execute(
            f"copy (select {columns} from {source}) to $target (format parquet, compression snappy)",
            {**params, "target": target},
        ).fetchone()
    except Exception as exc:  # duckdb's own exception types
        raise LoaderError(f"export of {export.schema}.{export.table} to {target} failed: {exc}") from exc
    return target, int(row[0]) if row else 0
