"""The read-ahead between a source and a warehouse: order, counts, errors where they happened,
and a thread that stops when the writer does."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from roundtrip.core.read_ahead import read_ahead


def test_every_item_arrives_once_in_its_order() -> None:
    assert list(read_ahead(range(1000))) == list(range(1000))
    assert list(read_ahead([])) == []


def test_a_source_error_comes_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("row 3 is bad")

    got: list[int] = []
    with pytest.raises(ValueError, match="row 3 is bad"):
        for item in read_ahead(source()):
            got.append(item)
    assert got == [1, 2]


def test_the_next_item_is_read_while_the_caller_works_on_this_one() -> None:
    produced: list[int] = []

    def source() -> Iterator[int]:
        for i in range(3):
            produced.append(i)
            yield i

    items = read_ahead(source(), depth=1)
    assert next(items) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 3 and time.monotonic() < deadline:  # 1 waits in the queue, 2 is read
        time.sleep(0.01)
    assert produced == [0, 1, 2]
    assert list(items) == [1, 2]


def test_a_caller_that_stops_early_stops_and_closes_the_source() -> None:
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    items = read_ahead(source())
    with pytest.raises(RuntimeError, match="warehouse refused"):
        for item in items:
            if item == 5:
                raise RuntimeError("warehouse refused")
    items.close()  # what a for loop's caller does when the generator is dropped
    assert closed.wait(5)
    assert not [t for t in threading.enumerate() if t.name == "loaders-read-ahead"]
