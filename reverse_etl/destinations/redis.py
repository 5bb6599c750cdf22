"""Redis destination: JSON values under a key template, sent in bulk with a TTL.

Everything Redis-specific lives here. The key template becomes a DuckDB expression; each
record's fingerprint is a hash of the model row (or, for ``value: list``, of the list of the
key's rows), so the classification never renders JSON; the JSON value of a record is rendered
by DuckDB only when the record is sent. Changed records are ``SET`` (with ``EX ttl``);
unchanged ones are not resent, only their TTL renewed (``EXPIRE``, or ``EXISTS`` without a TTL):
a key that expired or was evicted meanwhile is written again and counted as ``healed`` (that
check is this destination's drift detection, one pipelined command per key). ``insert_only``
uses ``SET NX`` and never heals. ``mirror`` deletes the keys this sync wrote before and the
model no longer has; keys written by anyone else are never touched. Redis writes cannot join
the state's transaction: the engine marks them in doubt before they are sent (write-ahead,
``reverse_etl.state``).

Commands are encoded in the Redis protocol (RESP) by Arrow compute kernels, a batch at a time,
and written to a connection of our own (``RedisLink``: AUTH, SELECT and TLS from the URL); the
next chunk is sent before the previous chunk's replies are read, and replies are checked in
bulk: they are fixed-size (``+OK``, ``:0``, ``:1``, ``$-1``), so a batch's replies are read as
bytes and checked with NumPy, and only an error reply is parsed (by hiredis) for its message.
"""

from __future__ import annotations

import logging
import socket
import ssl
from string import Formatter
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from reverse_etl.counts import SyncCounts
from reverse_etl.destinations.base import Changes, Drift, StateView
from reverse_etl.records import (
    CHANGE,
    CHANGED,
    FINGERPRINT,
    HEALED,
    NEW,
    ROWS,
    UNCHANGED,
    RecordShape,
    fingerprint,
    fingerprint_of,
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


class RedisLink:
    """One connection to Redis of our own, from a ``redis://`` or ``rediss://`` URL: the
    handshake (AUTH, SELECT) and TLS done here, then commands in bulk. Errors are redis-py's
    exception types, so the engine sorts them as it sorts redis-py's."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlparse(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"ROUNDTRIP_REDIS_URL must be redis:// or rediss://, got {parts.scheme!r}")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.db = int((parts.path or "/").lstrip("/") or 0)
        self.tls = parts.scheme == "rediss"
        self.timeout = timeout
        self.sock: Any = None

    def connect(self) -> None:
        import redis

        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        except OSError as exc:
            raise redis.exceptions.ConnectionError(
                f"cannot connect to Redis at {self.host}:{self.port}: {exc}"
            ) from exc
        self.sock = sock
        handshake: list[list[bytes]] = []
        if self.password is not None:
            handshake.append([b"AUTH", *([self.user.encode()] if self.user else []), self.password.encode()])
        if self.db:
            handshake.append([b"SELECT", str(self.db).encode()])
        handshake.append([b"PING"])
        for command in handshake:
            reply = self.call(command)
            if isinstance(reply, Exception):
                self.close()
                if command[0] == b"AUTH" or "NOAUTH" in str(reply) or "WRONGPASS" in str(reply):
                    raise redis.exceptions.AuthenticationError(str(reply))
                raise redis.exceptions.ResponseError(str(reply))

    def call(self, command: list[bytes]) -> Any:
        """One command, its one reply (an error reply is returned as an exception, not raised)."""
        import hiredis

        self.sock.sendall(b"*%d\r\n" % len(command) + b"".join(bulk(a) for a in command))
        reader = hiredis.Reader()
        while (reply := reader.gets()) is False:
            reader.feed(self._recv())
        return reply

    def _recv(self) -> bytes:
        import redis

        try:
            data = self.sock.recv(1 << 20)
        except OSError as exc:
            raise redis.exceptions.ConnectionError(f"Redis connection lost: {exc}") from exc
        if not data:
            raise redis.exceptions.ConnectionError("Redis closed the connection")
        return data

    def replies(self, parts: list[pa.Array | bytes], count: int, width: int) -> np.ndarray:
        """Send ``count`` commands (arguments ``parts``), pipelined ``PIPELINE_COMMANDS`` at a
        time, and return their replies as a (count, width) byte matrix: every reply these
        commands get is ``width`` bytes long (``+OK``/``$-1`` 5, ``:0``/``:1`` 4). An error reply
        (of another length) raises redis-py's ``ResponseError`` with its message."""
        import redis

        if self.sock is None:
            self.connect()
        chunks: list[bytes] = []
        received = 0
        expected = 0
        try:
            for start in range(0, count, PIPELINE_COMMANDS):
                chunk = [p if isinstance(p, bytes) else p.slice(start, PIPELINE_COMMANDS) for p in parts]
                self.sock.sendall(resp_commands(chunk))
                # read what the previous chunks' replies have produced so far, Redis works meanwhile
                expected += min(PIPELINE_COMMANDS, count - start)
                while received < (expected - min(PIPELINE_COMMANDS, count - start)) * width:
                    data = self._recv()
                    chunks.append(data)
                    received += len(data)
            while received < count * width:
                data = self._recv()
                chunks.append(data)
                received += len(data)
                if b"-" in data and self._error_in(b"".join(chunks)):
                    break
        except OSError as exc:
            self.close()
            raise redis.exceptions.ConnectionError(f"Redis connection lost while sending: {exc}") from exc
        raw = b"".join(chunks)
        if len(raw) != count * width or raw.count(b"\n") != count:
            self.close()  # replies may be left unread on it
            raise redis.exceptions.ResponseError(self._first_error(raw))
        return np.frombuffer(raw, dtype=np.uint8).reshape(count, width)

    @staticmethod
    def _error_in(raw: bytes) -> bool:
        return raw.startswith(b"-") or b"\n-" in raw

    @staticmethod
    def _first_error(raw: bytes) -> str:
        import hiredis

        reader = hiredis.Reader()
        reader.feed(raw)
        while (reply := reader.gets()) is not False:
            if isinstance(reply, hiredis.ReplyError):
                return str(reply)
        return f"unexpected replies from Redis ({len(raw)} bytes)"

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


class RedisDestination:
    transactional = False

    def __init__(self, spec: SyncSpec, link: RedisLink | None) -> None:
        self.spec = spec
        self.settings = spec.settings
        self.link = link

    def shape(self, columns: list[str]) -> RecordShape:
        """One record per key: the key rendered from the template, the value the row as a JSON
        object, or (``value: list``) the JSON list of the key's rows in ``order_by`` order."""
        s, template = self.settings, self.spec.target
        target = key_template_sql(template)
        in_key = key_template_fields(template)
        required = {"key template": in_key, "order_by": s.order_by or []}
        shown = {TARGET: "key", VALUE: "value"}
        keys = [quote(k) for k in s.primary_key]
        if s.value == "object":
            on = " and ".join(f"m.{k} = c.{k}" for k in keys)
            return RecordShape(
                identity={TARGET: target},
                records=f"""select {target} as {TARGET}, {", ".join(keys)}, {fingerprint(columns)} as {FINGERPRINT},
                                   1 as {ROWS} from {{rows}}""",
                written=f"""select c.{TARGET}, {self._value_sql(columns, "m")} as {VALUE}, c.{CHANGE}
                            from {{rows}} m join {{records}} c on {on}""",
                required=required,
                shown=shown,
            )
        members = [c for c in columns if c not in set(in_key)]
        order = ", ".join(quote(c) for c in (s.order_by or [k for k in s.primary_key if k not in set(in_key)]))
        member = f"struct_pack({', '.join(f'{quote(c)} := {quote(c)}' for c in members)})"
        listed = f"list({member} order by {order or '1'})"
        return RecordShape(
            identity={TARGET: target},
            records=f"""select {target} as {TARGET}, {fingerprint_of(listed)} as {FINGERPRINT}, count(*) as {ROWS}
                        from {{rows}} group by 1""",
            written=f"""select c.{TARGET}, to_json({listed})::varchar as {VALUE}, any_value(c.{CHANGE}) as {CHANGE}
                        from (select *, {target} as {TARGET} from {{rows}}) m join {{records}} c using ({TARGET})
                        group by c.{TARGET}""",
            required=required,
            shown=shown,
        )

    @staticmethod
    def _value_sql(columns: list[str], alias: str) -> str:
        fields = ", ".join(f"{quote(c)} := {alias}.{quote(c)}" for c in columns)
        return f"to_json(struct_pack({fields}))::varchar"

    def drift(self, owned: int, state: str) -> Drift:
        return Drift()  # checked key by key while unchanged keys get their TTL renewed (write)

    def _link(self) -> RedisLink:
        if self.link is None:
            raise RuntimeError("no Redis connection")
        return self.link

    def _set(self, keys: pa.Array, values: pa.Array, nx: bool = False) -> np.ndarray:
        """SET each key; with ``nx`` returns which were set (the others existed)."""
        ttl = self.settings.ttl_seconds
        parts: list[pa.Array | bytes] = [b"SET", keys, values]
        if ttl:
            parts += [b"EX", str(ttl).encode()]
        if nx:
            parts.append(b"NX")
        replies = self._link().replies(parts, len(keys), 5)  # +OK\r\n, or $-1\r\n (NX: not set)
        return replies[:, 0] == ord("+")

    def write(self, changes: Changes) -> SyncCounts:
        plan = changes.plan
        counts = SyncCounts()
        if self.settings.mode == "insert_only":
            for batch in changes.batches((NEW,)):
                counts.inserted += int(self._set(batch[TARGET], batch[VALUE], nx=True).sum())
            counts.unchanged = plan.records - counts.inserted
            return counts

        for batch in changes.batches((NEW, CHANGED, HEALED)):
            self._set(batch[TARGET], batch[VALUE])
        counts.inserted, counts.updated, counts.healed = plan.new, plan.changed, plan.healed
        ttl = self.settings.ttl_seconds
        renew: list[pa.Array | bytes] = [b"EXPIRE"] if ttl else [b"EXISTS"]
        for batch in changes.batches((UNCHANGED,), rendered=False):
            keys = batch[TARGET]
            alive = self._link().replies([*renew, keys, *([str(ttl).encode()] if ttl else [])], len(keys), 4)
            lost = np.flatnonzero(alive[:, 1] == ord("0"))  # expired or evicted since: write again
            if len(lost):
                self._write_again(changes, keys.take(pa.array(lost)))
            counts.healed += len(lost)
            counts.unchanged += len(keys) - len(lost)
        return counts

    def _write_again(self, changes: Changes, keys: pa.Array) -> None:
        """The values of ``keys`` (lost by Redis), rendered now and SET."""
        con = changes.records.con
        con.register("rt_lost_keys", pa.table({TARGET: keys}))
        try:
            query = changes.records.records_sql((UNCHANGED,))
            reader = con.execute(
                f"select * from ({query}) where {TARGET} in (select {TARGET} from rt_lost_keys)"
            ).to_arrow_reader(self.settings.batch_rows)
            for batch in reader:
                if batch.num_rows:
                    self._set(batch[TARGET], batch[VALUE])
        finally:
            con.unregister("rt_lost_keys")

    def finish(self, state: StateView) -> SyncCounts:
        if self.settings.mode != "mirror":
            return SyncCounts()
        deleted = 0
        for batch in state.gone():
            replies = self._link().replies([b"DEL", batch[TARGET]], batch.num_rows, 4)
            deleted += int((replies[:, 1] == ord("1")).sum())  # expired keys are not counted
        return SyncCounts(deleted=deleted)

    def after_commit(self) -> list[str]:
        return []

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
