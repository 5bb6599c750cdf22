"""CSV (RFC 4180: comma-separated, ``"`` quotes, a header line) -> text columns; a record that
cannot be read is held back, the others load.

Lines come from ``loaders.sources.lines`` (physical numbers, UTF-8, NUL, BOM, blank lines);
Python's ``csv`` module reads the records (strict quoting), so a record that spans lines (a
quoted line break) keeps the number of its first line. An empty field is NULL, as DuckDB and
Spark read it. A record with more or fewer fields than the header, or with broken quoting, is
held back with its reason. A header that cannot be used (two names that sanitize alike, a
column outside the declared ones, more columns than the declared ones or than ``max_columns``,
a header line that cannot be read) holds back the whole file, in the time it takes to read that
one line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import BinaryIO

import pyarrow as pa

from loaders.config import MAX_COLUMNS, MAX_LINE_BYTES
from loaders.sources import lines
from loaders.sources.lines import FileProblem, HeldBack
from roundtrip.core.contract import MISSING_FIELDS

_SHOWN_COLUMNS = 5


def read(
    handle: BinaryIO,
    columns: list[str] | None,
    chunk_bytes: int = lines.CHUNK_BYTES,
    max_line: int = MAX_LINE_BYTES,
    max_columns: int = MAX_COLUMNS,
) -> tuple[list[pa.Table], list[HeldBack], list[str]]:
    held: list[HeldBack] = []
    consumed: list[tuple[int, int, str]] = []  # (line, offset, text) fed to the csv reader

    def physical_lines() -> Iterator[str]:
        for chunk, _, _ in lines.numbered(handle, chunk_bytes, max_line):
            held.extend(chunk.held_back)
            for number, start, text in zip(chunk.numbers.tolist(), chunk.offsets.tolist(), chunk.text.to_pylist()):
                if chunk.bom_inside and text.startswith("\ufeff"):
                    text = text[1:]
                consumed.append((number, start, text))
                yield text

    reader = csv.reader(physical_lines(), strict=True)
    header: list[str] | None = None
    out_columns: list[str] = list(columns or [])
    values: list[list[str | None]] = []
    numbers: list[int] = []
    index: list[int] = []  # header position of each output column, -1 when the header lacks it
    while True:
        first = len(consumed)
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            number, offset, text = consumed[first] if first < len(consumed) else consumed[-1]
            held.append(lines.held_back(number, offset, f"CSV: {exc}", text.rstrip("\n").encode()))
            continue
        number, offset, text = consumed[first]
        if header is None:
            unusable = [h for h in held if (h.line or 0) < number]
            if unusable:  # the line before the first record could not be read: no header to trust
                raise FileProblem(f"header (line {unusable[0].line}): {unusable[0].reason}")
            header = record
            out_columns, index = _header_columns(header, columns, max_columns)
            values = [[] for _ in out_columns]
            continue
        if len(record) != len(header):
            raw = "".join(t for _, _, t in consumed[first:]).rstrip("\r\n").encode()
            held.append(lines.held_back(number, offset, f"{len(record)} field(s), the header has {len(header)}", raw))
            continue
        numbers.append(number)
        for column, position in zip(values, index):
            column.append((record[position] or None) if position >= 0 else None)
        if len(consumed) > 10_000:  # only the current record's lines are needed
            del consumed[: len(consumed) - 100]
    held.sort(key=lambda h: h.line or 0)
    if header is None:
        if held:  # nothing but lines that cannot be read: not even a header
            raise FileProblem(f"header (line {held[0].line}): {held[0].reason}")
        return [], held, out_columns
    table = pa.table(
        {
            **{c: pa.array(v, pa.string()) for c, v in zip(out_columns, values)},
            "_source_line": pa.array(numbers, pa.int64()),
        }
    )
    if columns is not None:
        missing = ",".join(c for c, position in zip(out_columns, index) if position < 0) or None
        table = table.append_column(MISSING_FIELDS, pa.repeat(pa.scalar(missing, pa.string()), table.num_rows))
    return [table], held, out_columns


def _sanitized(header: list[str]) -> list[str]:
    from loaders.sources.files import sanitize

    return [sanitize(name) for name in header]


def _shown(names: list[str]) -> str:
    if len(names) <= _SHOWN_COLUMNS:
        return repr(names)
    return f"{names[:_SHOWN_COLUMNS]!r} and {len(names) - _SHOWN_COLUMNS:,} more"


def _header_columns(header: list[str], columns: list[str] | None, max_columns: int) -> tuple[list[str], list[int]]:
    """(the columns the file's records fill: the declared ones or the header's, the header
    position of each, -1 where the header lacks it). A header wider than the declared columns or
    than ``max_columns`` is refused before anything else is done with it."""
    limit = len(columns) if columns is not None else max_columns
    if len(header) > limit:
        allowed = "the stream declares" if columns is not None else "max_columns is"
        if columns is not None:
            expected = set(columns)
            unexpected = [n for n in _sanitized(header[: limit + _SHOWN_COLUMNS * 2]) if n not in expected]
            detail = f" (unexpected: {_shown(unexpected)} ...)" if unexpected else ""
        else:
            detail = ""
        raise FileProblem(f"header: {len(header):,} columns, {allowed} {limit:,}{detail}")
    clean = _sanitized(header)
    seen: dict[str, str] = {}
    for original, name in zip(header, clean):
        if name in seen:
            raise FileProblem(f"header: columns {seen[name]!r} and {original!r} both become {name!r}")
        seen[name] = original
    if columns is None:
        return clean, list(range(len(clean)))
    expected = set(columns)
    unexpected = [n for n in clean if n not in expected]
    if unexpected:
        raise FileProblem(f"header: unexpected column(s) {_shown(unexpected)}; expected {columns}")
    position = {name: i for i, name in enumerate(clean)}
    return list(columns), [position.get(c, -1) for c in columns]
