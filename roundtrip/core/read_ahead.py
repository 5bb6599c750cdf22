"""Produce the next items of an iterator on a helper thread while the caller works on this one.

For pipelines whose two halves mostly run without the GIL: a loader's source (SQLite, DuckDB's
scanner, Arrow conversions) ahead of its warehouse (DuckDB, Postgres, gRPC), a Redis sync's
rendering and encoding (DuckDB, Arrow) ahead of its socket. Items arrive in their order, at most
``depth`` of them wait (memory stays a few items), and the producer's error is raised where it
happened: after the items before it, never instead of them.
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


def read_ahead(items: Iterable[T], depth: int = 1, name: str = "read-ahead") -> Generator[T, None, None]:
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

    thread = threading.Thread(target=produce, name=name, daemon=True)
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
