"""One file of a stream, read into everything a run writes about it: ``read_one(file) -> outcome``.

Both file strategies (``transactional`` and ``catalog``) call it, so a file reads the same way
whichever writes it: its rows stamped with the load time, its held-back lines (or the whole
file, for a reason) as quarantine rows, the values ``types`` rejected, and the manifest entry
that describes exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from loaders import state
from loaders.config import FileStreamConfig
from loaders.sources import files as file_source
from loaders.sources.lines import HeldBack
from loaders.warehouse.base import stamp


@dataclass(frozen=True)
class FileOutcome:
    entry: state.ManifestEntry  # what the manifest will say about the file
    rows: pa.Table | None  # stamped rows to load; None: the file is held back whole
    quarantine: pa.Table  # QUARANTINE_SCHEMA: its held-back lines, or the file itself
    rejects: pa.Table  # REJECTS_SCHEMA: values that did not parse as their declared type

    @property
    def records(self) -> int:
        """Records the file gave: loaded, held back and rejected (what the report counts as read)."""
        loaded = self.rows.num_rows if self.rows is not None else 0
        return loaded + self.quarantine.num_rows + self.rejects.num_rows


def read_one(
    con: Any, source_file: file_source.SourceFile, stream: FileStreamConfig, stream_name: str, loaded_at: datetime
) -> FileOutcome:
    """Read ``source_file`` once. A file that cannot be read is held back whole, with its
    reason; one that changed while it was read is held back under a fingerprint no file has
    (``state.READ_AGAIN``), so the next run reads it again and it is never taken as done."""
    read = file_source.read_file(con, source_file, stream, stream_name, loaded_at)
    held = read.held_back
    rows: pa.Table | None = stamp(read.data, loaded_at)
    if read.unreadable is not None:
        held = [HeldBack(None, None, read.unreadable, b"", source_file.size)]
        rows = None
    fingerprint = state.READ_AGAIN if read.read_again else source_file.fingerprint
    rejects = read.rejects if read.rejects is not None else state.REJECTS_SCHEMA.empty_table()
    entry = state.ManifestEntry(
        path=source_file.path,
        size=source_file.size,
        fingerprint=fingerprint,
        rows=rows.num_rows if rows is not None else 0,
        loaded_at=loaded_at,
        content_hash=read.content_hash,
        status=state.LOADED if rows is not None else state.HELD_BACK,
        held_back=len(held),
    )
    quarantine = state.quarantine_rows(stream_name, source_file.path, fingerprint, held, loaded_at)
    return FileOutcome(entry, rows, quarantine, rejects)
