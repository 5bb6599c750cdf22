"""Read the next batch while the warehouse writes this one.

A source spends its time in SQLite, DuckDB's scanner and Arrow conversions; a warehouse in
DuckDB, Postgres or gRPC calls. Most of both runs without the GIL, so reading batch k+1 in a
thread while batch k is written overlaps the two. The batches arrive in their order, at most
``depth`` of them wait (memory stays a few batches), and the source's error is raised where it
happened: after the batches before it, never instead of them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(items: Iterable[T], depth: int = 1) -> Generator[T, None, None]:
    """``items`` in order, the next ones produced in a thread while the caller works on this one.
    A caller that stops early (its own error, or ``close()``) stops the thread before returning."""
    waiting: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    break
            else:
                put(_DONE)
        except BaseException as exc:  # handed to the caller, raised there
            put(_Failed(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # a generator source closes its connections in this thread
                close()

    thread = threading.Thread(target=produce, name="loaders-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = waiting.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
