"""The interface every destination implements.

The engine streams record batches; for each it has asked the sync state which records are
NEW, CHANGED or UNCHANGED (``reverse_etl.state``). A destination sends what its mode needs and
returns exact counts of what happened on its side.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pyarrow as pa

from reverse_etl.counts import SyncCounts
from reverse_etl.state import StateStore


class Destination(Protocol):
    def write(self, batch: pa.RecordBatch, changes: np.ndarray) -> SyncCounts:
        """Send the records of ``batch`` that the mode needs; count inserted / updated / unchanged."""

    def finish(self, state: StateStore) -> SyncCounts:
        """After the last batch, before the commit: ``mirror`` deletes, ``replace`` swaps."""

    def after_commit(self) -> list[str]:
        """Work that must follow the commit: refreshing serving models (their names)."""

    def close(self) -> None: ...
