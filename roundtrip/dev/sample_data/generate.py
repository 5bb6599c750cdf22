"""Generate every source of the sample business in one call."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from roundtrip.dev.sample_data import model, writers

log = logging.getLogger(__name__)
Progress = Callable[[str, int], None]


@dataclass
class GenerationReport:
    users: int = 0
    items: int = 0
    orders: int = 0
    clicks: int = 0
    files: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def _counted(chunks: Iterable[pa.Table], stream: str, progress: Progress | None) -> Iterator[pa.Table]:
    for chunk in chunks:
        yield chunk
        if progress is not None:
            progress(stream, chunk.num_rows)


def generate(
    cfg: model.SampleConfig,
    sqlite_path: Path,
    landing: Path,
    postgres_conninfo: str | None,
    fmt: str = "jsonl",
    progress: Progress | None = None,
) -> GenerationReport:
    """Users -> SQLite, items -> Postgres ``catalog`` (skipped when no conninfo), events -> files.
    ``progress(stream, rows)`` is told each chunk of events as it is written."""
    report = GenerationReport()
    t = time.perf_counter()
    report.users = writers.write_users_sqlite(sqlite_path, model.users_table(cfg))
    report.seconds["users"] = time.perf_counter() - t

    t = time.perf_counter()
    items = model.items_table(cfg)
    if postgres_conninfo:
        report.items = writers.write_items_postgres(postgres_conninfo, items)
    report.seconds["items"] = time.perf_counter() - t

    sess = model.sessions(cfg)
    for stream, chunks in (("orders", model.orders_chunks(cfg, sess)), ("clicks", model.clicks_chunks(cfg, sess))):
        t = time.perf_counter()
        written = writers.write_events(landing, stream, _counted(chunks, stream, progress), fmt)
        setattr(report, stream, sum(written.values()))
        report.files += len(written)
        report.seconds[stream] = time.perf_counter() - t
        log.info("%s: %d records in %d files", stream, sum(written.values()), len(written))
    return report
