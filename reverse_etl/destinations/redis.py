"""Redis destination: JSON values under a key template, sent through pipelines with a TTL.

Change detection: a hash ``roundtrip:sync:<name>:fingerprints`` maps each key this sync wrote
to a fingerprint of its value. An unchanged key is not rewritten, only its TTL renewed (and if it
had expired, it is written again). ``mirror`` deletes the keys this sync wrote before and the
model no longer has; keys written by anyone else are never touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import date, datetime
from decimal import Decimal
from string import Formatter
from typing import Any

import pyarrow as pa

from reverse_etl.counts import SyncCounts
from reverse_etl.errors import SyncError, TransientSyncError
from reverse_etl.spec import SyncSpec

log = logging.getLogger(__name__)
FLUSH_KEYS = 2_000


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact: never through a float
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"), sort_keys=False)


class RedisDestination:
    def __init__(self, spec: SyncSpec, url: str) -> None:
        import redis

        self.spec = spec
        self.settings = spec.settings
        self.client = redis.Redis.from_url(url)
        try:
            self.client.ping()
        except redis.exceptions.ConnectionError as exc:
            raise TransientSyncError(f"sync {spec.name}: cannot reach Redis: {exc}") from exc
        self.fingerprints = f"roundtrip:sync:{spec.name}:fingerprints"
        self.seen = f"roundtrip:sync:{spec.name}:seen"
        self.client.delete(self.seen)
        self.template_fields = [f for _, f, _, _ in Formatter().parse(self.settings.target) if f]
        self.pending: dict[str, str] = {}
        self.open_group: tuple[str, list[dict[str, Any]]] | None = None

    def _key(self, row: dict[str, Any]) -> str:
        missing = [f for f in self.template_fields if f not in row]
        if missing:
            raise SyncError(f"sync {self.spec.name}: key template {self.settings.target!r} needs column(s) {missing}")
        return self.settings.target.format(**row)

    def write(self, batch: pa.Table) -> SyncCounts:
        counts = SyncCounts()
        group_by = self.settings.group_by
        for row in batch.to_pylist():
            if group_by is None:
                self.pending[self._key(row)] = encode(row)
            else:
                key = self._key(row)
                member = {k: v for k, v in row.items() if k != group_by}
                if self.open_group is not None and self.open_group[0] == key:
                    self.open_group[1].append(member)
                else:
                    self._close_group()
                    self.open_group = (key, [member])
            if len(self.pending) >= FLUSH_KEYS:
                counts.add(self._flush())
        return counts

    def _close_group(self) -> None:
        if self.open_group is not None:
            key, members = self.open_group
            self.pending[key] = encode(members)
            self.open_group = None

    def _flush(self) -> SyncCounts:
        counts = SyncCounts()
        if not self.pending:
            return counts
        keys = list(self.pending)
        values = [self.pending[k] for k in keys]
        digests = [hashlib.sha1(v.encode()).hexdigest()[:20] for v in values]
        previous = self.client.hmget(self.fingerprints, keys)
        ttl = self.settings.ttl_seconds
        same = [i for i, (old, new) in enumerate(zip(previous, digests)) if old is not None and old.decode() == new]
        still_there: dict[int, bool] = {}
        if same:
            pipe = self.client.pipeline(transaction=False)
            for i in same:
                if ttl:
                    pipe.expire(keys[i], ttl)
                else:
                    pipe.exists(keys[i])
            still_there = {i: bool(r) for i, r in zip(same, pipe.execute())}
        pipe = self.client.pipeline(transaction=False)
        for i, key in enumerate(keys):
            if still_there.get(i):
                counts.unchanged += 1
                continue
            pipe.set(key, values[i], ex=ttl)
            if previous[i] is None or i in still_there:  # new, or expired since: written afresh
                counts.inserted += 1
            else:
                counts.updated += 1
        pipe.hset(self.fingerprints, mapping=dict(zip(keys, digests)))
        pipe.sadd(self.seen, *keys)
        pipe.execute()
        self.pending.clear()
        return counts

    def finish(self) -> SyncCounts:
        self._close_group()
        counts = self._flush()
        if self.settings.mode == "mirror":
            counts.deleted = self._delete_gone()
        self.client.delete(self.seen)
        return counts

    def _delete_gone(self) -> int:
        deleted = 0
        cursor = 0
        while True:
            cursor, fields = self.client.hscan(self.fingerprints, cursor, count=FLUSH_KEYS)
            names = list(fields)
            if names:
                present = self.client.smismember(self.seen, names)
                gone = [n for n, p in zip(names, present) if not p]
                if gone:
                    pipe = self.client.pipeline(transaction=False)
                    pipe.delete(*gone)
                    pipe.hdel(self.fingerprints, *gone)
                    deleted += int(pipe.execute()[0])  # keys that had expired are not counted
            if cursor == 0:
                return deleted

    def abort(self) -> None:
        self.client.delete(self.seen)

    def close(self) -> None:
        self.client.close()
