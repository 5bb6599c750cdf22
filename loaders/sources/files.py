"""Event files (JSON lines, CSV, Parquet) from a local folder, gs://, s3://, az:// (any fsspec URL).

One filesystem layer: fsspec lists the files and reads their bytes. Every field arrives as text
(bronze keeps what was sent) unless the stream declares ``types``; the reader adds
``_source_file`` and ``_source_line`` (the record's physical line, 1-based, blank lines counted;
for Parquet the row number) and, when the stream declares its columns, ``_missing_fields``.

Reading never stops at bad input: a line that is not a record is held back with its line, byte
offset, reason and raw text (``jsonl``, ``csvfile``), and a file that cannot be read at all
(a corrupt Parquet file, an unusable CSV header, a symbolic link that loops or leads nowhere)
is held back whole. A file that changed while it was read (``snapshot``) is held back for this
run and read again at the next. An empty file is zero rows. Only a failure to fetch the bytes
of an object store (a network or permission error) stops the run, since trying again later may
succeed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from loaders.config import FileStreamConfig
from loaders.errors import LoaderError
from loaders.sources import csvfile, jsonl
from loaders.sources.lines import HeldBack
from loaders.sources.snapshot import FetchError, Reading, changed, is_local, store_fingerprint, version_of
from roundtrip.core.contract import MISSING_FIELDS
from roundtrip.core.sql import literal
from roundtrip.core.sql import quote as q

log = logging.getLogger(__name__)

EXTENSIONS = {"jsonl": (".jsonl", ".json", ".ndjson"), "csv": (".csv",), "parquet": (".parquet",)}
SOURCE_FILE, SOURCE_LINE = "_source_file", "_source_line"
_MD5_HEX = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class SourceFile:
    path: str  # full URL, or a local path
    size: int
    fingerprint: str  # md5 of the content (local), generation (GCS), ETag (S3, Azure): changes with the content
    content_hash: str | None = None  # "md5:<hex>" when the store says it (or it was computed): the same bytes anywhere
    problem: str | None = None  # why the entry cannot be read at all (a link that loops or leads nowhere)


@dataclass(frozen=True)
class Listing:
    files: list[SourceFile]
    folder_exists: bool  # False: nothing could be listed, which says nothing about deletions


def filesystem(url: str, options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` (gcsfs for gs://, s3fs for s3://, adlfs for az://) and the
    path inside it. ``options`` are the stream's ``storage_options`` (credentials come from the
    environment as each library documents: STORAGE_EMULATOR_HOST, AWS_*, ...)."""
    import fsspec

    return fsspec.core.url_to_fs(url, **(options or {}))  # type: ignore[no-any-return]


def _local_md5(fs: Any, path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return f"md5:{digest.hexdigest()}"


def _content_hash(info: dict[str, Any]) -> str | None:
    """The MD5 of the object's bytes when its store keeps it: GCS ``md5Hash``, an S3 ETag of a
    single-part upload, Azure's ``content_md5``. None otherwise (it is computed when needed)."""
    if info.get("md5Hash"):
        return "md5:" + base64.b64decode(info["md5Hash"]).hex()
    etag = str(info.get("ETag") or "").strip('"').lower()
    if _MD5_HEX.fullmatch(etag):
        return f"md5:{etag}"
    settings = info.get("content_settings") or {}
    md5 = settings.get("content_md5") if isinstance(settings, dict) else getattr(settings, "content_md5", None)
    if md5:
        return "md5:" + bytes(md5).hex()
    return None


def _listed(fs: Any, url: str, path: str, info: dict[str, Any]) -> SourceFile:
    """One listed file with its fingerprint (as cheaply as the store allows) and content hash; a
    local entry that cannot be read (a symbolic link that loops or leads nowhere, a FIFO, no
    permission) is listed with its problem, under a fingerprint that stays the same while the
    problem does."""
    fingerprint = store_fingerprint(info)
    if fingerprint is not None:  # object stores: no need to read the object
        return SourceFile(url, int(info.get("size") or 0), fingerprint, _content_hash(info))
    if not is_local(fs):
        md5 = _local_md5(fs, path)
        return SourceFile(url, int(info.get("size") or 0), md5, md5)
    try:
        status = os.stat(path)  # a symbolic link is followed
        if not stat.S_ISREG(status.st_mode):
            kind = "a folder" if stat.S_ISDIR(status.st_mode) else "a FIFO, socket or device"
            return _unreadable(url, f"not a regular file ({kind})", info)
        md5 = _local_md5(fs, path)
    except OSError as exc:
        return _unreadable(url, f"cannot be read: {exc.strerror or exc}", info)
    return SourceFile(url, status.st_size, md5, md5)


def _unreadable(url: str, problem: str, info: dict[str, Any]) -> SourceFile:
    if info.get("islink"):
        problem += f" (a symbolic link to {info.get('destination')!r})"
    log.warning("%s %s (held back)", url, problem)
    return SourceFile(url, 0, f"unreadable:{problem}", None, problem)


def list_files(stream: FileStreamConfig) -> Listing:
    """The stream's files, sorted by path; an absent folder has none."""
    fs, root = filesystem(stream.path, stream.storage_options)
    protocol = stream.path.split("://", 1)[0] + "://" if "://" in stream.path else ""
    if not fs.exists(root):
        return Listing([], False)
    found = []
    for path, info in sorted(fs.find(root, detail=True).items()):
        if path.endswith(EXTENSIONS[stream.format]):
            found.append(_listed(fs, protocol + path, path, info))
    return Listing(found, True)


def content_hash(source: SourceFile, stream: FileStreamConfig) -> str:
    """The file's content hash, reading it when the store did not say."""
    if source.content_hash:
        return source.content_hash
    fs, path = filesystem(source.path, stream.storage_options)
    return _local_md5(fs, path)


def sanitize(name: str) -> str:
    """Lower snake_case identifier: letters, digits and underscores, not starting with a digit."""
    cleaned = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip()).strip("_").lower()
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return cleaned


def sanitized_names(names: list[str], where: str) -> list[str]:
    """Sanitized names; two source names that sanitize alike are an error, never a silent merge."""
    result = [sanitize(n) for n in names]
    seen: dict[str, str] = {}
    for original, clean in zip(names, result):
        if clean in seen:
            raise LoaderError(f"{where}: columns {seen[clean]!r} and {original!r} both become {clean!r}")
        seen[clean] = original
    return result


@contextlib.contextmanager
def reader() -> Iterator[Any]:
    """An in-memory DuckDB connection that parses the files."""
    import duckdb

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    try:
        yield con
    finally:
        con.close()


@dataclass
class FileRead:
    """What one file gave: rows to load, lines held back, or the reason the whole file was."""

    data: pa.Table
    held_back: list[HeldBack] = field(default_factory=list)
    unreadable: str | None = None  # the whole file is held back, for this reason
    rejects: pa.Table | None = None  # typed values that did not parse (``types``)
    content_hash: str | None = None  # of exactly the bytes read
    read_again: bool = False  # the bytes were no one version of the file: read it at the next run


def read_file(
    con: Any, source: SourceFile, stream: FileStreamConfig, stream_name: str, rejected_at: datetime
) -> FileRead:
    """The file's rows (text columns named and ordered as the stream expects, plus file, line
    and missing fields), its held-back lines, and the values ``types`` could not coerce; or the
    reason it is held back whole. Read once, hashed as it is read, and checked to be one
    version of the file (``snapshot``)."""
    if source.problem is not None:
        return FileRead(_empty(stream), unreadable=source.problem)
    fs, path = filesystem(source.path, stream.storage_options)
    columns = list(stream.columns) if stream.columns is not None else None
    try:
        before = version_of(fs, path)
        handle = fs.open(path, "rb")
    except FileNotFoundError:
        return _read_again(source, stream, "the file disappeared after it was listed")
    except OSError as exc:
        if is_local(fs):  # a local entry that cannot be opened: this file's problem, not the run's
            return _read_again(source, stream, f"cannot be opened: {exc.strerror or exc}")
        raise LoaderError(f"{source.path}: cannot open: {exc}") from exc
    reading = Reading(handle)
    problem: str | None = None
    try:
        try:
            tables, held, found = _parse(con, reading, source, stream, columns)
        except FetchError:
            raise
        except Exception as exc:  # the content: duckdb, pyarrow, csv, a header that cannot be used
            problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.debug("%s cannot be read", source.path, exc_info=True)
            while reading.read(1 << 24):  # the rest, so that the hash is the whole file's
                pass
        after = version_of(fs, path)
    except FetchError as exc:
        if is_local(fs):
            return _read_again(source, stream, f"reading failed: {exc}")
        raise LoaderError(f"{source.path}: reading failed: {exc}") from exc
    except FileNotFoundError:
        return _read_again(source, stream, "the file disappeared while it was read")
    except OSError as exc:  # the store could not say what the file is now
        if is_local(fs):
            return _read_again(source, stream, f"cannot be checked after reading: {exc.strerror or exc}")
        raise LoaderError(f"{source.path}: cannot check the object after reading it: {exc}") from exc
    finally:
        handle.close()
    moved_on = changed(source.size, source.fingerprint, source.content_hash, before, after, reading)
    if moved_on is not None:  # whatever the bytes said, they were not the file's
        return _read_again(source, stream, moved_on)
    if problem is not None:
        log.warning("%s cannot be read as %s (file held back): %s", source.path, stream.format, problem)
        return FileRead(
            _empty(stream), unreadable=f"cannot read as {stream.format}: {problem}", content_hash=reading.content_hash
        )
    data = _assemble(tables, columns if columns is not None else found, stream, source.path)
    for line in held[:5]:
        log.warning("%s line %s: %s (line held back)", source.path, line.line, line.reason)
    if len(held) > 5:
        log.warning("%s: %d more lines held back", source.path, len(held) - 5)
    data, rejects = _coerce(con, data, stream, stream_name, rejected_at)
    return FileRead(data, held, None, rejects, reading.content_hash)


def _read_again(source: SourceFile, stream: FileStreamConfig, reason: str) -> FileRead:
    log.warning("%s: %s; held back, read again at the next run", source.path, reason)
    return FileRead(_empty(stream), unreadable=f"{reason}; read again at the next run", read_again=True)


def _parse(
    con: Any, reading: Reading, source: SourceFile, stream: FileStreamConfig, columns: list[str] | None
) -> tuple[list[pa.Table], list[HeldBack], list[str]]:
    """(record batches, held-back lines, the columns found) of the whole file."""
    if source.size == 0:
        return [], [], list(columns or [])
    limits = {"max_line": int(stream.max_line_bytes), "max_columns": stream.max_columns}
    if stream.format == "jsonl":
        return jsonl.read(con, reading, columns, **limits)  # type: ignore[arg-type]
    if stream.format == "csv":
        return csvfile.read(reading, columns, **limits)  # type: ignore[arg-type]
    tables, found = _read_parquet(con, reading.read(), stream, source.path)
    return tables, [], found


def _read_parquet(con: Any, content: bytes, stream: FileStreamConfig, where: str) -> tuple[list[pa.Table], list[str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(content))
    clean = sanitized_names(table.column_names, where)
    table = table.rename_columns(clean)
    if stream.columns is not None:
        unexpected = [c for c in clean if c not in stream.columns]
        if unexpected:
            raise ValueError(f"unexpected column(s) {unexpected}; expected {stream.columns}")
    if stream.as_text and table.num_columns:
        con.register("_parquet", table)
        try:
            table = con.execute(
                f"select {', '.join(f'cast({q(c)} as varchar) as {q(c)}' for c in clean)} from _parquet"
            ).to_arrow_table()
        finally:
            con.unregister("_parquet")
    table = table.append_column(SOURCE_LINE, pa.array(range(1, table.num_rows + 1), pa.int64()))
    if stream.columns is not None:
        missing = ",".join(c for c in stream.columns if c not in clean) or None
        table = table.append_column(MISSING_FIELDS, pa.repeat(pa.scalar(missing, pa.string()), table.num_rows))
    return [table], clean


def _assemble(tables: list[pa.Table], columns: list[str], stream: FileStreamConfig, path: str) -> pa.Table:
    """One table: the columns in order (absent ones NULL), then file, line, missing fields."""
    if not tables:
        return _empty(stream, columns)
    data = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    present = set(data.column_names)  # once: a wide file has thousands of columns
    arrays, names = [], []
    for column in columns:
        names.append(column)
        if column in present:
            arrays.append(data.column(column))
        else:
            arrays.append(pa.nulls(data.num_rows, pa.string()))
    names.append(SOURCE_FILE)
    arrays.append(pa.repeat(pa.scalar(path, pa.string()), data.num_rows))
    names.append(SOURCE_LINE)
    arrays.append(data.column(SOURCE_LINE))
    if stream.columns is not None:
        names.append(MISSING_FIELDS)
        arrays.append(data.column(MISSING_FIELDS))
    return pa.table(arrays, names=names)


def _coerce(
    con: Any, text: pa.Table, stream: FileStreamConfig, stream_name: str, rejected_at: datetime
) -> tuple[pa.Table, pa.Table]:
    """(rows to load, rejected values). A row with a value that does not parse as its declared
    type is held back whole and each bad value is reported with file, line and column; NULLs
    stay NULL; the file's other rows load."""
    from loaders.state import REJECTS_SCHEMA

    if not stream.types:
        return text, REJECTS_SCHEMA.empty_table()
    unknown = [c for c in stream.types if c not in text.column_names]
    if unknown:
        raise LoaderError(f"loaders.yml: stream {stream_name!r} types name unknown column(s) {unknown}")
    con.register("_text", text)
    try:
        bad = [f"({q(c)} is not null and try_cast({q(c)} as {t}) is null)" for c, t in stream.types.items()]
        typed = [
            f"cast({q(c)} as {stream.types[c]}) as {q(c)}" if c in stream.types else q(c) for c in text.column_names
        ]
        data = con.execute(f"select {', '.join(typed)} from _text where not ({' or '.join(bad)})").to_arrow_table()
        rejects = con.execute(
            " union all ".join(
                f"select {SOURCE_FILE} as source_file, {SOURCE_LINE} as source_line, "
                f"{literal(c)} as column_name, {q(c)} as value, {literal(t)} as expected_type from _text "
                f"where {q(c)} is not null and try_cast({q(c)} as {t}) is null"
                for c, t in stream.types.items()
            )
            + " order by source_line, column_name"
        ).to_arrow_table()
    finally:
        con.unregister("_text")
    n = rejects.num_rows
    rejects = pa.table(
        {
            "stream": pa.array([stream_name] * n, pa.string()),
            **{c: rejects.column(c) for c in ("source_file", "source_line", "column_name", "value", "expected_type")},
            "rejected_at": pa.array([rejected_at] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=REJECTS_SCHEMA,
    )
    for row in rejects.slice(0, 5).to_pylist():
        log.warning(
            "%s line %s: %s = %r is not a %s (row held back)",
            row["source_file"],
            row["source_line"],
            row["column_name"],
            row["value"],
            row["expected_type"],
        )
    return data, rejects


def _empty(stream: FileStreamConfig, columns: list[str] | None = None) -> pa.Table:
    """No rows, the stream's columns as text: a file with no record, a catalog with no file."""
    names = list(columns if columns is not None else (stream.columns or list(stream.types)))
    arrays = [pa.array([], pa.string()) for _ in names]
    names += [SOURCE_FILE, SOURCE_LINE]
    arrays += [pa.array([], pa.string()), pa.array([], pa.int64())]
    if stream.columns is not None:
        names.append(MISSING_FIELDS)
        arrays.append(pa.array([], pa.string()))
    return pa.table(arrays, names=names)


def empty_table(stream: FileStreamConfig) -> pa.Table:
    """No rows, the stream's columns and types: a catalog with no file still has its table."""
    import duckdb

    empty = _empty(stream)
    with duckdb.connect() as con:
        con.register("_empty", empty)
        select = [
            f"cast({q(c)} as {stream.types[c]}) as {q(c)}" if c in stream.types else q(c) for c in empty.column_names
        ]
        return con.execute(f"select {', '.join(select)} from _empty").to_arrow_table()
