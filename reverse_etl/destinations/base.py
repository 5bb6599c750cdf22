"""The interface every destination implements.

DuckDB has classified every record of the model as NEW, CHANGED or UNCHANGED against the sync
state (``reverse_etl.source``). A destination pulls the records its mode needs from the source,
sends them, and returns exact counts of what happened on its side.
"""

from __future__ import annotations

from typing import Protocol

from reverse_etl.counts import SyncCounts
from reverse_etl.source import ModelSource, Plan
from reverse_etl.state import StateStore


class Destination(Protocol):
    def send(self, source: ModelSource, plan: Plan, gone: int) -> SyncCounts:
        """Write what the mode needs (``gone``: records of the state the model no longer has);
        count inserted / updated / unchanged."""

    def finish(self, state: StateStore) -> SyncCounts:
        """After the state is updated, before the commit: ``mirror`` deletes, ``replace`` swaps."""

    def after_commit(self) -> list[str]:
        """Work that must follow the commit: refreshing serving models (their names)."""

    def close(self) -> None: ...
