"""Run one sync: stream the model, reject bad keys, hand batches to the destination."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from reverse_etl.counts import SyncCounts
from reverse_etl.destinations.base import Destination
from reverse_etl.errors import SyncError
from reverse_etl.source import read_model
from reverse_etl.spec import SyncSpec

log = logging.getLogger(__name__)


@dataclass
class Endpoints:
    """Where destinations live (resolved at the entry point, never at import)."""

    postgres_url: str | None = None
    redis_url: str | None = None


@dataclass
class SyncResult:
    spec: SyncSpec
    counts: SyncCounts = field(default_factory=SyncCounts)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "sync": self.spec.name,
            "mode": self.spec.settings.mode,
            **self.counts.as_dict(),
            "seconds": round(self.seconds, 3),
        }


def open_destination(spec: SyncSpec, endpoints: Endpoints) -> Destination:
    if spec.settings.destination == "postgres":
        if not endpoints.postgres_url:
            raise SyncError(f"sync {spec.name}: no Postgres configured (ROUNDTRIP_POSTGRES_URL)")
        from reverse_etl.destinations.postgres import PostgresDestination

        return PostgresDestination(spec, endpoints.postgres_url)
    if not endpoints.redis_url:
        raise SyncError(f"sync {spec.name}: no Redis configured (ROUNDTRIP_REDIS_URL)")
    from reverse_etl.destinations.redis import RedisDestination

    return RedisDestination(spec, endpoints.redis_url)


class KeyGuard:
    """Rejects rows whose key is NULL or was already seen in this run, with the reason."""

    def __init__(self, spec: SyncSpec) -> None:
        self.keys = spec.settings.primary_key
        self.grouped = spec.settings.group_by is not None
        self.seen: set[tuple[object, ...]] = set()

    def filter(self, batch: pa.Table, counts: SyncCounts) -> pa.Table:
        null_key = None
        for k in self.keys:
            mask = pc.is_null(batch.column(k))
            null_key = mask if null_key is None else pc.or_(null_key, mask)
        keep = pc.invert(null_key)
        rejected_null = batch.filter(null_key)
        for row in rejected_null.select(self.keys).to_pylist():
            counts.rejected += 1
            if len(counts.rejections) < 20:
                counts.rejections.append((str(row), "NULL in primary key"))
        batch = batch.filter(keep)
        if self.grouped:  # many rows per key by design: the key is the group
            return batch
        key_rows = list(zip(*(batch.column(k).to_pylist() for k in self.keys)))
        mask = []
        for key in key_rows:
            duplicate = key in self.seen
            self.seen.add(key)
            mask.append(not duplicate)
            if duplicate:
                counts.rejected += 1
                if len(counts.rejections) < 20:
                    counts.rejections.append((str(dict(zip(self.keys, key))), "duplicate primary key"))
        return batch.filter(pa.array(mask, pa.bool_()))


def run_sync(spec: SyncSpec, endpoints: Endpoints) -> SyncResult:
    started = time.perf_counter()
    result = SyncResult(spec)
    destination = open_destination(spec, endpoints)
    guard = KeyGuard(spec)
    try:
        for record_batch in read_model(spec):
            batch = pa.Table.from_batches([record_batch])
            result.counts.read += batch.num_rows
            batch = guard.filter(batch, result.counts)
            result.counts.add(destination.write(batch))
        result.counts.add(destination.finish())
    except BaseException:
        destination.abort()
        raise
    finally:
        destination.close()
    result.seconds = time.perf_counter() - started
    log.info("sync %s: %s", spec.name, result.counts.as_dict())
    return result
