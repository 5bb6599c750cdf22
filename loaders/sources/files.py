"""Event files (JSON lines, CSV, Parquet) from a local folder, gs:// or s3://, through fsspec.

Files are read by DuckDB, one at a time, every field as text (bronze keeps what was sent);
the reader adds ``_source_file`` and ``_source_line`` so that any row can be traced back.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import pyarrow as pa

from loaders.config import FileStreamConfig
from loaders.errors import LoaderError

log = logging.getLogger(__name__)

EXTENSIONS = {"jsonl": (".jsonl", ".json", ".ndjson"), "csv": (".csv",), "parquet": (".parquet",)}


@dataclass(frozen=True)
class SourceFile:
    path: str  # full URL or local path
    size: int
    fingerprint: str  # etag / generation / md5 / mtime: changes when the content changes


def filesystem(url: str):  # type: ignore[no-untyped-def]
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return fs, root


def list_files(stream: FileStreamConfig) -> list[SourceFile]:
    fs, root = filesystem(stream.path)
    protocol = stream.path.split("://", 1)[0] + "://" if "://" in stream.path else ""
    found: list[SourceFile] = []
    if not fs.exists(root):
        return found
    for path, info in sorted(fs.find(root, detail=True).items()):
        if not path.endswith(EXTENSIONS[stream.format]):
            continue
        fingerprint = str(
            info.get("generation")
            or info.get("ETag")
            or info.get("etag")
            or info.get("md5Hash")
            or info.get("mtime")
            or info.get("LastModified")
            or info.get("created")
            or ""
        ).strip('"')
        found.append(SourceFile(protocol + path if protocol else path, int(info.get("size") or 0), fingerprint))
    return found


def sanitize(name: str) -> str:
    """Lower snake_case identifier: letters, digits and underscores, not starting with a digit."""
    cleaned = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip()).strip("_").lower()
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return cleaned


def sanitized_names(names: list[str], where: str) -> list[str]:
    result = [sanitize(n) for n in names]
    seen: dict[str, str] = {}
    for original, clean in zip(names, result):
        if clean in seen:
            raise LoaderError(f"{where}: columns {seen[clean]!r} and {original!r} both become {clean!r}")
        seen[clean] = original
    return result


def read_file(con, source: SourceFile, stream: FileStreamConfig) -> pa.Table:  # type: ignore[no-untyped-def]
    """One file as an Arrow table of text columns plus ``_source_file`` and ``_source_line``."""
    fs, _ = filesystem(source.path)
    if "://" in source.path:
        con.register_filesystem(fs)
    path = source.path.replace("'", "''")
    if stream.format == "jsonl":
        scan = f"read_json('{path}', format = 'newline_delimited', records = true, sample_size = -1, hive_partitioning = false)"
    elif stream.format == "csv":
        scan = f"read_csv('{path}', header = true, all_varchar = true, hive_partitioning = false)"
    else:
        scan = f"read_parquet('{path}', hive_partitioning = false)"
    try:
        described = con.execute(f"describe select * from {scan}").fetchall()
    except Exception as exc:  # duckdb raises its own exception types
        raise LoaderError(f"{source.path}: cannot read as {stream.format}: {exc}") from exc
    originals = [row[0] for row in described]
    clean = sanitized_names(originals, source.path)
    if stream.columns is not None:
        unexpected = [c for c in clean if c not in stream.columns]
        if unexpected:
            raise LoaderError(f"{source.path}: unexpected column(s) {unexpected}; expected {stream.columns}")
        wanted = stream.columns
    else:
        wanted = clean
    by_clean = dict(zip(clean, originals))
    select = [
        (f'cast("{by_clean[c]}" as varchar)' if c in by_clean else "cast(null as varchar)") + f' as "{c}"'
        for c in wanted
    ]
    # insertion order is preserved for a single-file scan, so row_number() is the line number
    query = (
        f"select {', '.join(select)}, '{path}' as _source_file, "
        f"cast(row_number() over () as bigint) as _source_line from {scan}"
    )
    try:
        return con.execute(query).fetch_arrow_table()
    except Exception as exc:
        raise LoaderError(f"{source.path}: cannot read as {stream.format}: {exc}") from exc
