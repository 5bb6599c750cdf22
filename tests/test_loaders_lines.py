"""Physical lines of a text file (``loaders.sources.lines``): numbers, offsets, and lines too long
to keep, at every read size, in memory that does not follow the line."""

from __future__ import annotations

import io
import random
import tracemalloc

import pytest

from loaders.sources import lines


def _reference(content: bytes, max_line: int) -> tuple[list[tuple[int, int, str]], list[tuple[int, int, int, bytes]]]:
    """(kept lines as (number, offset, text), held lines as (number, offset, size, head)), by plain Python."""
    kept, held = [], []
    offset = 0
    parts = content.split(b"\n")
    if content.endswith(b"\n"):
        parts = parts[:-1]
    for number, part in enumerate(parts, 1):
        body = part[:-1] if part.endswith(b"\r") else part
        if len(body) > max_line:
            held.append((number, offset, len(body), body[: lines.RAW_LIMIT]))
        elif body.strip(b" \t\r"):
            kept.append((number, offset, body.decode()))
        offset += len(part) + 1
    return kept, held


def _read(content: bytes, chunk_bytes: int, max_line: int):  # type: ignore[no-untyped-def]
    kept, held = [], []
    for chunk, _, _ in lines.numbered(io.BytesIO(content), chunk_bytes, max_line):
        texts = [t.rstrip("\n").removesuffix("\r") for t in chunk.text.to_pylist()]
        kept += list(zip(chunk.numbers.tolist(), chunk.offsets.tolist(), texts))
        held += [(h.line, h.offset, h.size, h.raw) for h in chunk.held_back]
    return kept, held


@pytest.mark.parametrize("seed", range(4))
def test_every_line_is_numbered_and_placed_alike_at_every_read_size(seed: int) -> None:
    rng = random.Random(seed)
    parts = []
    for _ in range(120):
        length = rng.choice([0, 1, 5, 40, 200, 1500, 5000])
        body = "".join(rng.choice("abc xyz{}:,") for _ in range(length)).encode()
        parts.append(body + rng.choice([b"\n", b"\r\n"]))
    content = b"".join(parts)
    if seed % 2:
        content += b"last line without a break"
    for max_line in (64, 1000, 4999, 1 << 20):
        expected = _reference(content, max_line)
        assert expected[0], "some lines are kept"
        for chunk_bytes in (3, 7, 100, 4096, 1 << 20):
            assert _read(content, chunk_bytes, max_line) == expected, (max_line, chunk_bytes)


@pytest.mark.parametrize("break_", [b"\n", b"\r\n"])
@pytest.mark.parametrize("chunk_bytes", [1, 2, 50, 51, 52, 1 << 20])
def test_a_line_of_exactly_the_limit_loads_and_one_byte_more_is_held_back(break_: bytes, chunk_bytes: int) -> None:
    limit = 50
    content = b"a" * limit + break_ + b"b" * (limit + 1) + break_ + b"c" * limit + b"\r" + b"d" + break_ + b"e"
    kept, held = _read(content, chunk_bytes, limit)
    assert [(n, text[:1], len(text)) for n, _, text in kept] == [(1, "a", limit), (4, "e", 1)]
    assert [(n, size) for n, _, size, _ in held] == [(2, limit + 1), (3, limit + 2)]
    assert (kept, held) == _reference(content, limit)


def test_a_line_past_the_limit_is_counted_and_dropped_in_constant_memory() -> None:
    """A 256 MiB line without a break, read 1 MiB at a time with a 4 MiB limit: the reader never
    holds more than the limit and a read, and the line is held back with its true size."""

    class Endless:
        """``size`` bytes without a break, then a break and one more line."""

        def __init__(self, size: int) -> None:
            self.left, self.tail = size, b"\nafter\n"

        def read(self, size: int = -1) -> bytes:
            if self.left:
                block = min(size, self.left)
                self.left -= block
                return b"x" * block
            tail, self.tail = self.tail, b""
            return tail

    line = 256 << 20
    tracemalloc.start()
    try:
        pieces = [
            (chunk.numbers.tolist(), [(h.line, h.offset, h.size) for h in chunk.held_back])
            for chunk, _, _ in lines.numbered(Endless(line), 1 << 20, 4 << 20)  # type: ignore[arg-type]
        ]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pieces == [([], [(1, 0, line)]), ([2], [])]
    assert peak < 16 << 20, f"peak {peak / 2**20:.0f} MiB for a {line >> 20} MiB line"
