"""``roundtrip sync verify``: each sync's destination read back and compared with its mart.

Postgres: the sync's rows by key, column by column; Redis: the sync's keys, their values and
TTLs. What differs is reported (rows missing, differing by value with the columns that differ,
extra rows the sync wrote or deleted, and rows it never wrote), with a sample; ``--repair`` runs
the sync once more with every record read back (``RunOptions.verify_all``), so exactly what
differs is written again. Writes nothing without ``--repair``.
"""

from __future__ import annotations

from reverse_etl.connections import Connections
from reverse_etl.errors import SyncError
from reverse_etl.results import RunOptions
from reverse_etl.run import SyncRun, Verification
from reverse_etl.spec import SyncSpec
from roundtrip.core.settings import load_settings


def verify_sync(spec: SyncSpec, connections: Connections, options: RunOptions, limit: int = 10) -> Verification:
    settings = options.settings or load_settings()
    return SyncRun(spec, connections, options, settings, None).verify(limit)


def verify_syncs(
    specs: list[SyncSpec], connections: Connections, options: RunOptions, limit: int = 10
) -> list[Verification]:
    out = []
    for spec in specs:
        try:
            out.append(verify_sync(spec, connections, options, limit))
        except SyncError as exc:
            raise SyncError(f"verify {spec.name}: {exc}", hint=exc.hint) from exc
    return out
