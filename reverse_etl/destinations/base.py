"""The interface every destination implements."""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa

from reverse_etl.counts import SyncCounts


class Destination(Protocol):
    def write(self, batch: pa.Table) -> SyncCounts:
        """Send the rows that changed; count inserted / updated / unchanged."""

    def finish(self) -> SyncCounts:
        """After the last batch: commit, and for ``mirror`` delete what the model no longer has."""

    def abort(self) -> None:
        """Undo what can be undone after a failure."""

    def close(self) -> None: ...
