"""Produce the items of an iterator on a helper thread, a few ahead of the consumer.

For pipelines whose two halves release the GIL (DuckDB and Arrow producing batches, a socket
or a database consuming them): the producer works on the next item while the consumer is busy
with this one. Items come out in order; an exception of the producer is raised in the consumer
where the item it failed on would have come; a consumer that stops early (or fails) stops the
producer before the next item, and waits for it, so nothing touches the producer's resources
after the loop.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def read_ahead(items: Iterable[T], depth: int = 2, name: str = "read-ahead") -> Iterator[T]:
    """``items``, produced by a thread at most ``depth`` items ahead (memory: ``depth`` items)."""
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Failure(exc))

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
