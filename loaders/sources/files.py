"""Event files (JSON lines, CSV, Parquet) from a local folder, gs://, s3:// (any fsspec URL).

One filesystem layer: fsspec lists the files and hands DuckDB the same filesystem to read them,
one file at a time. Every field arrives as text (bronze keeps what was sent) unless the stream
declares ``types``; the reader adds ``_source_file`` and ``_source_line`` so any row can be
traced back to its file and line.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from loaders.config import FileStreamConfig
from loaders.errors import LoaderError
from roundtrip.core.sql import quote as q

log = logging.getLogger(__name__)

EXTENSIONS = {"jsonl": (".jsonl", ".json", ".ndjson"), "csv": (".csv",), "parquet": (".parquet",)}
SOURCE_FILE, SOURCE_LINE = "_source_file", "_source_line"


@dataclass(frozen=True)
class SourceFile:
    path: str  # full URL, or a local path
    size: int
    fingerprint: str  # md5 of the content (local), generation (GCS), ETag (S3): changes with the content


def filesystem(url: str, options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` (gcsfs for gs://, s3fs for s3://, adlfs for az://) and the
    path inside it. ``options`` are the stream's ``storage_options`` (credentials come from the
    environment as each library documents: STORAGE_EMULATOR_HOST, AWS_*, ...)."""
    import fsspec

    return fsspec.core.url_to_fs(url, **(options or {}))  # type: ignore[no-any-return]


def _fingerprint(fs: Any, path: str, info: dict[str, Any]) -> str:
    """What changes when the content changes, as cheaply as the store allows."""
    for field in ("generation", "ETag", "etag", "md5Hash"):  # object stores: no need to read the object
        if info.get(field):
            return f"{field}:{str(info[field]).strip(chr(34))}"
    digest = hashlib.md5(usedforsecurity=False)
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return f"md5:{digest.hexdigest()}"


def list_files(stream: FileStreamConfig) -> list[SourceFile]:
    """The stream's files, sorted by path; an absent folder has none."""
    fs, root = filesystem(stream.path, stream.storage_options)
    protocol = stream.path.split("://", 1)[0] + "://" if "://" in stream.path else ""
    if not fs.exists(root):
        return []
    found = []
    for path, info in sorted(fs.find(root, detail=True).items()):
        if path.endswith(EXTENSIONS[stream.format]):
            found.append(SourceFile(protocol + path, int(info.get("size") or 0), _fingerprint(fs, path, info)))
    return found


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
    """An in-memory DuckDB connection that reads the files."""
    import duckdb

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    try:
        yield con
    finally:
        con.close()


def _json_keys(con: Any, literal: str) -> list[str]:
    """Every key of a JSON-lines file, in order of first appearance."""
    rows = con.execute(
        f"select key from (select unnest(json_keys(json)) as key, row_number() over () as n "
        f"from read_ndjson_objects('{literal}')) group by key order by min(n)"
    ).fetchall()
    return [r[0] for r in rows]


def _scan(con: Any, path: str, fmt: str, as_text: bool) -> str:
    literal = path.replace("'", "''")
    if fmt == "jsonl":
        if as_text:
            # Every key read as VARCHAR: type detection would re-render the text
            # ('2026-11-20T17:47:27.655Z' became '2026-11-20 17:47:27.655'), and bronze keeps what was sent
            keys = _json_keys(con, literal)
            if keys:
                spec = ", ".join("'" + k.replace("'", "''") + "': 'VARCHAR'" for k in keys)
                return (
                    f"read_json('{literal}', format = 'newline_delimited', records = true, "
                    f"columns = {{{spec}}}, hive_partitioning = false)"
                )
        return (
            f"read_json('{literal}', format = 'newline_delimited', records = true, sample_size = -1, "
            "hive_partitioning = false)"
        )
    if fmt == "csv":
        return f"read_csv('{literal}', header = true, all_varchar = true, hive_partitioning = false)"
    return f"read_parquet('{literal}', hive_partitioning = false)"


def _text_table(con: Any, source: SourceFile, stream: FileStreamConfig) -> pa.Table:
    """The file as text columns (unless ``as_text`` is off) named and ordered as the stream
    expects, plus file and line."""
    if "://" in source.path:
        fs = filesystem(source.path, stream.storage_options)[0]
        names = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        if not set(names) & set(con.list_filesystems()):  # once per connection
            con.register_filesystem(fs)
    try:
        scan = _scan(con, source.path, stream.format, stream.as_text)
        # one pass over the file: a single-file scan keeps the file's order, so row_number()
        # is the record's line (for CSV: counted from the first line after the header)
        con.execute(f"create or replace temp table _file as select *, row_number() over () as _line_ from {scan}")
        originals = [row[0] for row in con.execute("describe _file").fetchall()][:-1]
    except Exception as exc:  # duckdb raises its own exception types
        raise LoaderError(f"{source.path}: cannot read as {stream.format}: {exc}") from exc
    try:
        clean = sanitized_names(originals, source.path)
        if stream.columns is not None:
            unexpected = [c for c in clean if c not in stream.columns]
            if unexpected:
                raise LoaderError(f"{source.path}: unexpected column(s) {unexpected}; expected {stream.columns}")
        by_clean = dict(zip(clean, originals))

        def column(name: str) -> str:
            if name not in by_clean:
                return f"cast(null as varchar) as {q(name)}"
            value = f"cast({q(by_clean[name])} as varchar)" if stream.as_text else q(by_clean[name])
            return f"{value} as {q(name)}"

        select = [column(c) for c in (stream.columns if stream.columns is not None else clean)]
        literal = source.path.replace("'", "''")
        return con.execute(
            f"select {', '.join(select)}, '{literal}' as {SOURCE_FILE}, "
            f"cast(_line_ as bigint) as {SOURCE_LINE} from _file order by _line_"
        ).to_arrow_table()
    finally:
        con.execute("drop table if exists _file")


def read_file(
    con: Any, source: SourceFile, stream: FileStreamConfig, stream_name: str, rejected_at: datetime
) -> tuple[pa.Table, pa.Table]:
    """(rows to load, rejected values). A row with a value that does not parse as its declared
    type is held back whole and each bad value is reported with file, line and column; NULLs
    stay NULL; the file's other rows load."""
    from loaders.state import REJECTS_SCHEMA

    text = _text_table(con, source, stream)
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
                f"'{c}' as column_name, {q(c)} as value, '{t}' as expected_type from _text "
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


def empty_table(stream: FileStreamConfig) -> pa.Table:
    """No rows, the stream's columns and types: a catalog with no file still has its table."""
    import duckdb

    columns = stream.columns or list(stream.types)
    select = [f"cast(null as {stream.types.get(c, 'varchar')}) as {q(c)}" for c in columns]
    query = f"select {', '.join([*select, f'cast(null as varchar) as {SOURCE_FILE}', f'cast(null as bigint) as {SOURCE_LINE}'])} limit 0"
    with duckdb.connect() as con:
        return con.execute(query).to_arrow_table()
