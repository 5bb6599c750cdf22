"""CSV (RFC 4180: comma-separated, ``"`` quotes, a header line) -> text columns; a record that
cannot be read is held back, the others load.

Lines come from ``loaders.sources.lines`` (physical numbers, UTF-8, NUL, BOM, blank lines);
Python's ``csv`` module reads the records (strict quoting), so a record that spans lines (a
quoted line break) keeps the number of its first line. An empty field is NULL, as DuckDB and
Spark read it. A record with more or fewer fields than the header, or with broken quoting, is
held back with its reason. A header that cannot be used (two names that sanitize alike, a
column outside the declared ones) holds back the whole file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import BinaryIO

import pyarrow as pa

from loaders.sources import lines
from loaders.sources.lines import HeldBack
from roundtrip.core.contract import MISSING_FIELDS


class FileProblem(Exception):
    """The file as a whole cannot be loaded (its header); the message says why."""


def read(
    handle: BinaryIO, columns: list[str] | None, chunk_bytes: int = lines.CHUNK_BYTES
) -> tuple[list[pa.Table], list[HeldBack], list[str]]:
    from loaders.sources.files import sanitize

    held: list[HeldBack] = []
    consumed: list[tuple[int, int, str]] = []  # (line, offset, text) fed to the csv reader

    def physical_lines() -> Iterator[str]:
        next_line = 1
        for data, offset in lines.chunks(handle, chunk_bytes):
            chunk = lines.split(data, offset, next_line)
            next_line += chunk.lines_read
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
            header = record
            clean = [sanitize(name) for name in header]
            seen: dict[str, str] = {}
            for original, name in zip(header, clean):
                if name in seen:
                    raise FileProblem(f"header: columns {seen[name]!r} and {original!r} both become {name!r}")
                seen[name] = original
            if columns is not None:
                unexpected = [n for n in clean if n not in columns]
                if unexpected:
                    raise FileProblem(f"header: unexpected column(s) {unexpected}; expected {columns}")
            else:
                out_columns = clean
            index = [clean.index(c) if c in clean else -1 for c in out_columns]
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
