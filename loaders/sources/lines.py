"""Physical lines of a text file, read as bytes: what the JSON-lines and CSV readers share.

A file is read in chunks that end on a line break. Each chunk is split with numpy (no Python
object per line), and every line gets its physical number (1-based, blank lines counted) and the
byte offset of its first byte in the file. Lines that cannot be text are found here, in bulk:

- a UTF-8 byte-order mark at the start of a line is the encoding mark, not data (at the start
  of the file, or where files were concatenated); it shifts neither numbers nor offsets;
- a line that is not valid UTF-8, or that holds a NUL byte, is held back with its reason;
- a blank line (nothing but spaces, tabs, a carriage return) is skipped, not held back;
- a line longer than ``max_line`` bytes is held back with its offset and size. Its bytes are
  counted and dropped as they arrive, so a line without end (a 2 GiB file with no line break)
  costs at most ``max_line + chunk_bytes`` of memory, and every block is searched once.

``\\n`` ends a line; a ``\\r`` before it belongs to the line break. The last line needs no break.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from loaders.config import MAX_LINE_BYTES

CHUNK_BYTES = 64 << 20
DROP_READ_BYTES = 1 << 20  # reads while a line past the limit is counted and dropped
BOM = b"\xef\xbb\xbf"
RAW_LIMIT = 1000  # bytes of a held-back line kept as its raw text
_WHITESPACE = b" \t\r\n"


class FileProblem(Exception):
    """The file as a whole cannot be loaded (its header, its columns); the message says why."""


@dataclass(frozen=True)
class HeldBack:
    """A line (or, with ``line`` None, a whole file) that cannot be loaded, and why."""

    line: int | None  # physical line, 1-based
    offset: int | None  # byte offset of the line's first byte in the file
    reason: str
    raw: bytes  # the line without its line break, at most RAW_LIMIT bytes
    size: int  # the line's full size in bytes


def raw_text(raw: bytes) -> str:
    """Held-back bytes as storable text: invalid UTF-8 as ``\\xNN``, NUL as ``\\x00`` (Postgres
    text cannot hold NUL), at most RAW_LIMIT bytes of the original."""
    return raw[:RAW_LIMIT].decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def held_back(line: int | None, offset: int | None, reason: str, raw: bytes) -> HeldBack:
    body = raw[:-1] if raw.endswith(b"\r") else raw
    return HeldBack(line, offset, reason, body[:RAW_LIMIT], len(body))


@dataclass
class Chunk:
    """Lines of one chunk: ``text`` holds the lines to parse (as one Arrow string array over the
    chunk's bytes, each line with its line break), ``numbers`` / ``offsets`` where they are."""

    text: pa.Array
    numbers: np.ndarray  # physical line numbers of the lines in ``text``
    offsets: np.ndarray  # byte offsets in the file
    held_back: list[HeldBack]
    lines_read: int  # physical lines in the chunk (blank and held back included)
    bom_inside: bool  # a line other than the file's first starts with a BOM


@dataclass(frozen=True)
class LongLine:
    """A line longer than the limit, of which only the first bytes were kept."""

    offset: int  # byte offset of its first byte in the file
    size: int  # its full size in bytes, line break excluded
    head: bytes  # its first RAW_LIMIT bytes


def too_long(size: int, max_line: int) -> str:
    return (
        f"line of {size:,} bytes is longer than max_line_bytes ({max_line:,}); "
        "raise max_line_bytes in loaders.yml to load it"
    )


@dataclass
class _Dropping:
    """The line being counted and dropped since it went past the limit."""

    offset: int
    size: int
    head: bytes
    ends_with_cr: bool

    def keep_head(self, more: bytes) -> None:
        if len(self.head) < RAW_LIMIT:
            self.head += more[: RAW_LIMIT - len(self.head)]

    def done(self) -> LongLine:
        size = self.size - self.ends_with_cr
        return LongLine(self.offset, size, self.head[:size])


def chunks(
    handle: BinaryIO, chunk_bytes: int = CHUNK_BYTES, max_line: int = MAX_LINE_BYTES
) -> Iterator[tuple[bytes, int] | LongLine]:
    """In file order: (bytes, offset in the file) of chunks that end on a line break (the last one
    may not), and a ``LongLine`` for a line that went past ``max_line`` before its break came.

    The bytes of a line longer than a block are kept as a list of blocks and joined once, when
    its break arrives (never ``pending + block`` again and again). A read never takes such a line
    past ``max_line + 2`` bytes (``max_line`` and a ``\\r\\n``); past ``max_line`` its bytes are
    no longer kept at all, only counted, in small reads. A line longer than ``max_line`` that
    ends inside a chunk is left to ``split``, which holds it back the same way."""
    offset = 0  # file offset of the first pending byte
    pending: list[memoryview] = []  # the start of a line whose break has not come yet
    pending_size = 0
    dropping: _Dropping | None = None
    while True:
        # a line near the limit reads only up to the limit: past it, nothing more is kept
        if dropping is not None:
            size = min(chunk_bytes, DROP_READ_BYTES)
        else:
            size = min(chunk_bytes, max(1, max_line + 2 - pending_size))
        block = handle.read(size)
        if not block:
            break
        if dropping is not None:
            end = block.find(b"\n")
            dropping.keep_head(block[: RAW_LIMIT if end < 0 else min(end, RAW_LIMIT)])
            if end < 0:
                dropping.size += len(block)
                dropping.ends_with_cr = block.endswith(b"\r")
                continue
            dropping.size += end
            if end:
                dropping.ends_with_cr = block[end - 1] == 13
            yield dropping.done()
            offset = dropping.offset + dropping.size + 1
            dropping = None
            block = block[end + 1 :]
            if not block:
                continue
        view = memoryview(block)
        cut = block.rfind(b"\n") + 1
        if cut == 0:  # no break in this block: the pending line goes on
            pending.append(view)
            pending_size += len(view)
            # past the limit (a last carriage return may be its line break's): keep its head only
            if pending_size - block.endswith(b"\r") > max_line:
                dropping = _Dropping(offset, pending_size, _head(pending), block.endswith(b"\r"))
                pending, pending_size = [], 0
            continue
        pending.append(view[:cut])
        data = b"".join(pending)
        yield data, offset
        offset += len(data)
        pending = [view[cut:]] if cut < len(block) else []
        pending_size = len(block) - cut
    if dropping is not None:
        yield dropping.done()
    elif pending:
        yield b"".join(pending), offset


def _head(parts: list[memoryview]) -> bytes:
    """The first RAW_LIMIT bytes of the parts."""
    head = bytearray()
    for part in parts:
        head += part[: RAW_LIMIT - len(head)]
        if len(head) >= RAW_LIMIT:
            break
    return bytes(head)


def numbered(
    handle: BinaryIO, chunk_bytes: int = CHUNK_BYTES, max_line: int = MAX_LINE_BYTES
) -> Iterator[tuple[Chunk, bytes, int]]:
    """(lines of a chunk, the chunk's bytes, its offset in the file), lines numbered from 1 across
    the file. A line that went past ``max_line`` comes as a chunk of its own with no text and
    the line held back."""
    next_line = 1
    for piece in chunks(handle, chunk_bytes, max_line):
        if isinstance(piece, LongLine):
            empty = np.empty(0, np.int64)
            held = HeldBack(next_line, piece.offset, too_long(piece.size, max_line), piece.head, piece.size)
            chunk = Chunk(pa.array([], pa.string()), empty, empty, [held], 1, False)
            yield chunk, b"", piece.offset
        else:
            data, offset = piece
            chunk = split(data, offset, next_line, max_line)
            yield chunk, data, offset
        next_line += chunk.lines_read


def split(data: bytes, file_offset: int, first_line: int, max_line: int = MAX_LINE_BYTES) -> Chunk:
    """The lines of ``data`` (a chunk from ``chunks``), numbered from ``first_line``."""
    arr = np.frombuffer(data, np.uint8)
    breaks = np.flatnonzero(arr == 10)
    starts = np.empty(len(breaks) + 1, np.int64)
    starts[0] = 0
    starts[1:] = breaks + 1
    if len(starts) > 1 and starts[-1] == len(data):  # the chunk ends with a line break
        starts = starts[:-1]
    if len(data) == 0:
        starts = starts[:0]
    count = len(starts)
    ends = np.empty(count, np.int64)  # end of each line, its break excluded
    ends[: len(breaks)] = breaks[:count]
    if count > len(breaks):
        ends[-1] = len(data)
    numbers = np.arange(first_line, first_line + count, dtype=np.int64)
    keep = np.ones(count, bool)
    held: list[HeldBack] = []

    def line_bytes(i: int) -> bytes:
        return data[starts[i] : ends[i]]

    # where each line's text begins: after a byte-order mark
    text_starts = starts.copy()
    bom_inside = False
    if count and data.startswith(BOM, 0) and file_offset == 0:
        text_starts[0] += 3
    if count and data.find(BOM) >= 0:
        lead = starts[starts + 3 <= len(data)]
        at = lead[(arr[lead] == 0xEF) & (arr[lead + 1] == 0xBB) & (arr[lead + 2] == 0xBF)]
        if file_offset == 0:
            at = at[at > 0]
        if len(at):
            bom_inside = True  # stripped by the parser; the line stays in one piece here
    # lines longer than the limit (a carriage return before the break is not counted)
    if count and len(data) > max_line:
        sizes = ends - starts
        for i in np.flatnonzero(sizes > max_line).tolist():
            size = int(sizes[i]) - (data[ends[i] - 1] == 13)
            if size > max_line:
                keep[i] = False
                raw = data[starts[i] : starts[i] + min(size, RAW_LIMIT)]
                held.append(
                    HeldBack(int(numbers[i]), file_offset + int(starts[i]), too_long(size, max_line), raw, size)
                )
    # blank lines: only whitespace (checked in Python for the few lines that start with some)
    if count:
        first = np.where(text_starts < ends, arr[np.minimum(text_starts, max(len(data) - 1, 0))], 32)
        maybe_blank = np.flatnonzero(
            (text_starts >= ends) | (first == 32) | (first == 9) | (first == 13) | (first == 0xEF)
        )
        for i in maybe_blank.tolist():
            if not keep[i]:
                continue
            body = data[text_starts[i] : ends[i]]
            if body.startswith(BOM):
                body = body[3:]
            if not body.strip(_WHITESPACE):
                keep[i] = False
    # NUL bytes
    if data.find(b"\x00") >= 0:
        nul_at = np.flatnonzero(arr == 0)
        for line_index in np.unique(np.searchsorted(starts, nul_at, side="right") - 1).tolist():
            if keep[line_index]:
                column = int(nul_at[np.searchsorted(nul_at, starts[line_index])] - starts[line_index]) + 1
                keep[line_index] = False
                held.append(
                    held_back(
                        int(numbers[line_index]),
                        file_offset + int(starts[line_index]),
                        f"NUL byte at column {column}",
                        line_bytes(line_index),
                    )
                )
    offsets32 = len(data) < 2**31 - 1
    bounds = np.empty(count + 1, np.int64)
    bounds[:count] = text_starts[:count]
    bounds[count] = len(data)
    # a line's string runs to the next line's start: its break is JSON (and CSV) whitespace; a
    # BOM that starts a later line stays in that line's string (the parser strips it)
    bounds[1:count] = starts[1:count]
    text_type: Any = pa.string() if offsets32 else pa.large_string()
    text = pa.Array.from_buffers(
        text_type, count, [None, pa.py_buffer(bounds.astype(np.int32 if offsets32 else np.int64)), pa.py_buffer(data)]
    )
    # UTF-8: the whole chunk at once (Arrow's validation); line by line only when it fails
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        for i in range(count):
            if not keep[i]:
                continue
            body = data[text_starts[i] : ends[i]]
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                keep[i] = False
                held.append(
                    held_back(
                        int(numbers[i]),
                        file_offset + int(starts[i]),
                        f"not valid UTF-8 (byte 0x{body[exc.start]:02x} at column {exc.start + 1 + int(text_starts[i] - starts[i])})",
                        line_bytes(i),
                    )
                )
    if not keep.all():
        selected = np.flatnonzero(keep)
        text = text.take(pa.array(selected))
        numbers, offsets = numbers[selected], starts[selected] + file_offset
    else:
        offsets = starts + file_offset
    return Chunk(text, numbers, offsets, held, count, bom_inside)


def raw_lines(data: bytes, file_offset: int, offsets: np.ndarray) -> list[bytes]:
    """The bytes of the lines starting at these file offsets (break excluded)."""
    found = []
    for offset in offsets:
        start = int(offset) - file_offset
        end = data.find(b"\n", start)
        found.append(data[start : end if end >= 0 else len(data)])
    return found
