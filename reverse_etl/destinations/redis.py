"""Redis destination: JSON values under a key template, sent in bulk with a TTL.

DuckDB already rendered each record's key and JSON value (``reverse_etl.source``) and the sync
state says which changed. Changed records are ``SET`` (with ``EX ttl``); unchanged ones are not
resent, only their TTL renewed (``EXPIRE``, or ``EXISTS`` without a TTL): a key that expired or
was evicted meanwhile is written again and counted as inserted. ``insert_only`` uses
``SET NX``. ``mirror`` deletes the keys this sync wrote before and the model no longer has;
keys written by anyone else are never touched.

Commands are encoded in the Redis protocol (RESP) by Arrow compute kernels, a whole batch at a
time, and written to one connection's socket; replies are parsed by hiredis and checked one by
one. Going through redis-py's pipeline object instead cost ~10 µs of Python per command.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import hiredis
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from reverse_etl.counts import SyncCounts
from reverse_etl.source import CHANGED, NEW, TARGET, UNCHANGED, VALUE, ModelSource, Plan
from reverse_etl.spec import SyncSpec
from reverse_etl.state import StateStore

log = logging.getLogger(__name__)
PIPELINE_COMMANDS = 10_000  # commands per round trip: bounds the buffers on both sides


def bulk(value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(data), data)


def resp_commands(parts: list[pa.Array | bytes]) -> bytes:
    """One RESP command per row, concatenated: ``parts`` are the arguments, each a string array
    (one value per row) or constant bytes. Plain ``str`` constants, not Arrow scalars: building
    a scalar imports pandas (half a second)."""
    pieces: list[Any] = []
    for part in parts:
        if isinstance(part, bytes):
            pieces.append(bulk(part).decode())
        else:
            text = part.cast(pa.string())
            length = pc.cast(pc.binary_length(text), pa.string())
            pieces.append(pc.binary_join_element_wise("$", length, "\r\n", text, "\r\n", ""))
    rows = pc.binary_join_element_wise(f"*{len(parts)}\r\n", *pieces, "")
    if not isinstance(rows, pa.Array):  # every part constant
        raise ValueError("resp_commands needs at least one array argument")
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32)[rows.offset : rows.offset + len(rows) + 1]
    return rows.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


def _read_replies(sock: Any, reader: Any, count: int, into: list[Any]) -> None:
    """Read ``count`` replies from ``sock`` through ``reader`` (hiredis); an error reply raises."""
    import redis

    got = 0
    while got < count:
        reply = reader.gets()
        if reply is False:  # needs more bytes
            data = sock.recv(1 << 20)
            if not data:
                raise redis.exceptions.ConnectionError("Redis closed the connection while replying")
            reader.feed(data)
            continue
        if isinstance(reply, hiredis.ReplyError):
            raise redis.exceptions.ResponseError(str(reply))
        into.append(reply)
        got += 1


class RedisDestination:
    def __init__(self, spec: SyncSpec, client: Any) -> None:
        self.spec = spec
        self.settings = spec.settings
        self.client = client

    def _execute(self, parts: list[pa.Array | bytes], count: int) -> list[Any]:
        """Send ``count`` commands and return their replies (an error reply raises).

        redis-py makes the connection (AUTH, SELECT, TLS); the commands then go straight to its
        socket and the replies through a hiredis reader of our own, because redis-py reads one
        reply per Python call (35 % of a sync's time). The next chunk is sent before the
        previous one's replies are read, so Redis works while we parse."""
        import redis

        replies: list[Any] = []
        conn = self.client.connection_pool.get_connection()
        try:
            conn.connect()
            sock = conn._sock  # no public bulk API; after the handshake nothing is left unread on it
            reader = hiredis.Reader()
            unread = 0
            for start in range(0, count, PIPELINE_COMMANDS):
                chunk = [p if isinstance(p, bytes) else p.slice(start, PIPELINE_COMMANDS) for p in parts]
                sock.sendall(resp_commands(chunk))
                _read_replies(sock, reader, unread, replies)
                unread = min(PIPELINE_COMMANDS, count - start)
            _read_replies(sock, reader, unread, replies)
        except OSError as exc:  # the socket itself: a connection problem, retried as such
            conn.disconnect()
            raise redis.exceptions.ConnectionError(f"Redis connection lost while sending: {exc}") from exc
        except BaseException:
            conn.disconnect()  # replies may be left unread on it
            raise
        finally:
            self.client.connection_pool.release(conn)
        return replies

    def _set(self, keys: pa.Array, values: pa.Array, nx: bool = False) -> list[Any]:
        ttl = self.settings.ttl_seconds
        parts: list[pa.Array | bytes] = [b"SET", keys, values]
        if ttl:
            parts += [b"EX", str(ttl).encode()]
        if nx:
            parts.append(b"NX")
        return self._execute(parts, len(keys))

    def send(self, source: ModelSource, plan: Plan, gone: int) -> SyncCounts:
        counts = SyncCounts()
        if self.settings.mode == "insert_only":
            for batch in source.records((NEW,), ordered=False):
                counts.inserted += sum(1 for r in self._set(batch[TARGET], batch[VALUE], nx=True) if r)
            counts.unchanged = plan.new + plan.changed + plan.unchanged - counts.inserted
            return counts

        for batch in source.records((NEW, CHANGED), ordered=False):
            self._set(batch[TARGET], batch[VALUE])
        counts.inserted, counts.updated = plan.new, plan.changed
        ttl = self.settings.ttl_seconds
        renew: list[pa.Array | bytes] = [b"EXPIRE"] if ttl else [b"EXISTS"]
        for batch in source.records((UNCHANGED,), ordered=False):
            keys = batch[TARGET]
            alive = self._execute([*renew, keys, *([str(ttl).encode()] if ttl else [])], len(keys))
            lost = np.flatnonzero(np.array(alive) == 0)  # expired or evicted since: write again
            if len(lost):
                self._set(keys.take(lost), batch[VALUE].take(lost))
            counts.inserted += len(lost)
            counts.unchanged += len(keys) - len(lost)
        return counts

    def finish(self, state: StateStore) -> SyncCounts:
        if self.settings.mode != "mirror":
            return SyncCounts()
        deleted = 0
        for keys in state.iter_gone(PIPELINE_COMMANDS):
            deleted += int(self.client.delete(*(json.loads(k) for k in keys)))  # expired keys are not counted
        state.forget_gone()
        return SyncCounts(deleted=deleted)

    def after_commit(self) -> list[str]:
        return []

    def close(self) -> None:
        self.client.close()
