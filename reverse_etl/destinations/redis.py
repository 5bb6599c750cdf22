"""Redis destination: JSON values under a key template, sent through pipelines with a TTL.

DuckDB already rendered each record's key and JSON value (``reverse_etl.source``); the sync
state says which changed. Changed records are ``SET`` (with ``EX ttl``); unchanged ones are not
resent, only their TTL renewed (``EXPIRE``, or ``EXISTS`` without a TTL): a key that expired or
was evicted meanwhile is written again and counted as inserted. ``insert_only`` uses
``SET NX``. ``mirror`` deletes the keys this sync wrote before and the model no longer has;
keys written by anyone else are never touched.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

from reverse_etl.counts import SyncCounts
from reverse_etl.source import TARGET, VALUE
from reverse_etl.spec import SyncSpec
from reverse_etl.state import CHANGED, NEW, UNCHANGED, StateStore

log = logging.getLogger(__name__)
PIPELINE_COMMANDS = 5_000


class RedisDestination:
    def __init__(self, spec: SyncSpec, client: Any) -> None:
        self.spec = spec
        self.settings = spec.settings
        self.client = client

    def _pipelined(self, commands: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        results: list[Any] = []
        for start in range(0, len(commands), PIPELINE_COMMANDS):
            pipe = self.client.pipeline(transaction=False)
            for name, args, kwargs in commands[start : start + PIPELINE_COMMANDS]:
                getattr(pipe, name)(*args, **kwargs)
            results.extend(pipe.execute())
        return results

    def write(self, batch: pa.RecordBatch, changes: np.ndarray) -> SyncCounts:
        keys: list[str] = batch[TARGET].to_pylist()
        values: list[str] = batch[VALUE].to_pylist()
        ttl = self.settings.ttl_seconds
        counts = SyncCounts()
        if self.settings.mode == "insert_only":
            new = np.flatnonzero(changes == NEW)
            done = self._pipelined([("set", (keys[i], values[i]), {"ex": ttl, "nx": True}) for i in new])
            counts.inserted = sum(1 for r in done if r)
            counts.unchanged = batch.num_rows - counts.inserted
            return counts

        same = np.flatnonzero(changes == UNCHANGED)
        renew = "expire" if ttl else "exists"
        alive = self._pipelined([(renew, (keys[i], ttl) if ttl else (keys[i],), {}) for i in same])
        lost = [int(i) for i, ok in zip(same, alive) if not ok]  # expired or evicted since: write again
        sets = [int(i) for i in np.flatnonzero(changes != UNCHANGED)] + lost
        self._pipelined([("set", (keys[i], values[i]), {"ex": ttl}) for i in sets])
        counts.inserted = int((changes == NEW).sum()) + len(lost)
        counts.updated = int((changes == CHANGED).sum())
        counts.unchanged = len(same) - len(lost)
        return counts

    def finish(self, state: StateStore) -> SyncCounts:
        if self.settings.mode != "mirror":
            return SyncCounts()
        deleted = 0
        for keys in state.iter_gone(PIPELINE_COMMANDS):
            deleted += int(self.client.delete(*keys))  # keys that had expired are not counted
        state.forget_gone()
        return SyncCounts(deleted=deleted)

    def after_commit(self) -> list[str]:
        return []

    def close(self) -> None:
        self.client.close()
