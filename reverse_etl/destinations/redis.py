"""Redis destination: JSON values under a key template, sent in bulk with a TTL.

Everything Redis-specific lives here: the key template and the JSON value of a record are
rendered by DuckDB from SQL this module writes (``shape``), and the sync state says which
records changed. Changed records are ``SET`` (with ``EX ttl``); unchanged ones are not resent,
only their TTL renewed (``EXPIRE``, or ``EXISTS`` without a TTL): a key that expired or was
evicted meanwhile is written again and counted as ``healed`` (that check is this destination's
drift detection, one pipelined command per key). ``insert_only`` uses ``SET NX`` and never
heals. ``mirror`` deletes the keys this sync wrote before and the model no longer has; keys
written by anyone else are never touched. Redis writes cannot join the state's transaction:
the engine marks them in doubt before they are sent (write-ahead, ``reverse_etl.state``).

Commands are encoded in the Redis protocol (RESP) by Arrow compute kernels, a whole batch at a
time, and written to one connection's socket; replies are parsed by hiredis and checked one by
one. Going through redis-py's pipeline object instead cost ~10 µs of Python per command.
"""

from __future__ import annotations

import json
import logging
from string import Formatter
from typing import Any

import hiredis
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from reverse_etl.counts import SyncCounts
from reverse_etl.destinations.base import Changes, Drift, StateView
from reverse_etl.records import (
    CHANGED,
    FINGERPRINT,
    HEALED,
    KEY,
    NEW,
    ROWS,
    UNCHANGED,
    RecordShape,
    fingerprint,
    json_object,
)
from reverse_etl.spec import SyncSpec, key_template_fields
from roundtrip.core.sql import literal, quote

log = logging.getLogger(__name__)
PIPELINE_COMMANDS = 10_000  # commands per round trip: bounds the buffers on both sides
TARGET, VALUE = "__rt_target", "__rt_value"  # the rendered key and JSON value of a record


def key_template_sql(template: str) -> str:
    """``reco:{user_id}`` as a DuckDB expression; NULL when a field is NULL."""
    parts = []
    for text, field_name, _, _ in Formatter().parse(template):
        if text:
            parts.append(literal(text))
        if field_name:
            parts.append(f"cast({quote(field_name)} as varchar)")
    return " || ".join(parts)


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
    transactional = False

    def __init__(self, spec: SyncSpec, client: Any) -> None:
        self.spec = spec
        self.settings = spec.settings
        self.client = client

    def shape(self, columns: list[str]) -> RecordShape:
        """One record per key: the key rendered from the template, the value the row as a JSON
        object, or (``value: list``) the JSON list of the key's rows in ``order_by`` order."""
        s, template = self.settings, self.spec.target
        target = key_template_sql(template)
        in_key = key_template_fields(template)
        if s.value == "object":
            value, grouping, rows = json_object(columns), "", "1"
        else:
            members = [c for c in columns if c not in set(in_key)]
            order = ", ".join(quote(c) for c in (s.order_by or [k for k in s.primary_key if k not in set(in_key)]))
            member = f"struct_pack({', '.join(f'{quote(c)} := {quote(c)}' for c in members)})"
            value = f"to_json(list({member} order by {order or '1'}))::varchar"
            grouping, rows = " group by 1", "count(*)"
        records = f"""
            select {TARGET}, to_json({TARGET})::varchar as {KEY}, {VALUE}, {fingerprint(VALUE)} as {FINGERPRINT}, {ROWS}
            from (select {target} as {TARGET}, {value} as {VALUE}, {rows} as {ROWS} from {{rows}}{grouping})"""
        required = {"key template": in_key, "order_by": s.order_by or []}
        return RecordShape(
            state_key=f"to_json({target})::varchar",
            records=records,
            required=required,
            shown={TARGET: "key", VALUE: "value"},
        )

    def drift(self, owned: int) -> Drift:
        return Drift()  # checked key by key while unchanged keys get their TTL renewed (write)

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

    def write(self, changes: Changes) -> SyncCounts:
        plan = changes.plan
        counts = SyncCounts()
        if self.settings.mode == "insert_only":
            for batch in changes.batches((NEW,)):
                counts.inserted += sum(1 for r in self._set(batch[TARGET], batch[VALUE], nx=True) if r)
            counts.unchanged = plan.records - counts.inserted
            return counts

        for batch in changes.batches((NEW, CHANGED, HEALED)):
            self._set(batch[TARGET], batch[VALUE])
        counts.inserted, counts.updated, counts.healed = plan.new, plan.changed, plan.healed
        ttl = self.settings.ttl_seconds
        renew: list[pa.Array | bytes] = [b"EXPIRE"] if ttl else [b"EXISTS"]
        for batch in changes.batches((UNCHANGED,)):
            keys = batch[TARGET]
            alive = self._execute([*renew, keys, *([str(ttl).encode()] if ttl else [])], len(keys))
            lost = np.flatnonzero(np.array(alive) == 0)  # expired or evicted since: write again
            if len(lost):
                self._set(keys.take(lost), batch[VALUE].take(lost))
            counts.healed += len(lost)
            counts.unchanged += len(keys) - len(lost)
        return counts

    def finish(self, state: StateView) -> SyncCounts:
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
