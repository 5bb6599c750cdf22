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

import contextlib
import logging
import socket
import ssl
from collections import deque
from collections.abc import Iterable, Iterator
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
from roundtrip.core.read_ahead import read_ahead
from roundtrip.core.sql import literal, quote

log = logging.getLogger(__name__)
PIPELINE_COMMANDS = 10_000  # commands per round trip: bounds the buffers on both sides
TARGET, VALUE = "__rt_target", "__rt_value"  # the rendered key and JSON value of a record


def key_template_sql(template: str, alias: str | None = None) -> str:
    """``reco:{user_id}`` as a DuckDB expression (over ``alias``'s columns); NULL when a field is NULL."""
    parts = []
    prefix = f"{alias}." if alias else ""
    for text, field_name, _, _ in Formatter().parse(template):
        if text:
            parts.append(literal(text))
        if field_name:
            parts.append(f"cast({prefix}{quote(field_name)} as varchar)")
    return " || ".join(parts)


def bulk(value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(data), data)


def resp_commands(parts: list[pa.Array | bytes]) -> memoryview:
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
    return memoryview(rows.buffers()[2])[offsets[0] : offsets[-1]]  # sent as it is, not copied


def encoded_chunks(parts: list[pa.Array | bytes], count: int) -> Iterator[tuple[memoryview, int]]:
    """The ``count`` commands of ``parts`` in RESP, ``PIPELINE_COMMANDS`` to a chunk."""
    for start in range(0, count, PIPELINE_COMMANDS):
        chunk = [p if isinstance(p, bytes) else p.slice(start, PIPELINE_COMMANDS) for p in parts]
        yield resp_commands(chunk), min(PIPELINE_COMMANDS, count - start)


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
        """Send ``count`` commands (arguments ``parts``) and return their replies as a
        (count, width) byte matrix: every reply these commands get is ``width`` bytes long
        (``+OK``/``$-1`` 5, ``:0``/``:1`` 4). An error reply raises redis-py's ``ResponseError``."""
        chunks = ((data, n, 0) for data, n in encoded_chunks(parts, count))
        matrices = [replies for replies, _ in self.exchange(chunks, width)]
        return np.concatenate(matrices) if matrices else np.zeros((0, width), dtype=np.uint8)

    def exchange(self, chunks: Iterable[tuple[Any, int, Any]], width: int) -> Iterator[tuple[np.ndarray, Any]]:
        """Send each chunk (``data``: the RESP bytes of ``count`` commands, with a ``tag``) and
        yield its replies, a (count, width) matrix, with its tag, in order. Chunk n+1 is on the
        wire before chunk n's replies are read, so Redis never waits for us to read."""
        import redis

        if self.sock is None:
            self.connect()
        pending: deque[tuple[int, Any]] = deque()
        buffer = bytearray()
        try:
            for data, count, tag in chunks:
                self.sock.sendall(data)
                pending.append((count, tag))
                if len(pending) > 1:
                    yield self._read(buffer, *pending.popleft(), width)
            while pending:
                yield self._read(buffer, *pending.popleft(), width)
        except OSError as exc:
            self.close()
            raise redis.exceptions.ConnectionError(f"Redis connection lost while sending: {exc}") from exc

    def _read(self, buffer: bytearray, count: int, tag: Any, width: int) -> tuple[np.ndarray, Any]:
        import redis

        size = count * width
        while len(buffer) < size:
            buffer += self._recv()  # an error reply is longer than ours: this ends with one too
        replies = np.frombuffer(bytes(buffer[:size]), dtype=np.uint8)
        # the first error reply starts where a reply of ours would: column 0 shows it
        if len(replies) != size or (replies.reshape(count, width)[:, 0] == ord("-")).any():
            message = self._first_error(bytes(buffer))
            self.close()  # replies may be left unread on it
            raise redis.exceptions.ResponseError(message)
        del buffer[:size]
        return replies.reshape(count, width), tag

    def _first_error(self, raw: bytes) -> str:
        """The message of the first error reply in ``raw`` (read on until it is whole)."""
        import hiredis

        reader = hiredis.Reader()
        reader.feed(raw)
        for _ in range(100):
            while (reply := reader.gets()) is not False:
                if isinstance(reply, hiredis.ReplyError):
                    return str(reply)
            try:
                reader.feed(self._recv())
            except Exception:
                break
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
                # the key rendered again from the model row: the join's build side then holds
                # only the keys and the kind, not every record's rendered key (memory at 10 M)
                written=f"""select {key_template_sql(template, "m")} as {TARGET}, {self._value_sql(columns, "m")} as {VALUE},
                                   c.{CHANGE} from {{rows}} m join (select {", ".join(keys)}, {CHANGE} from {{records}}) c on {on}""",
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

    def _set_parts(self, keys: pa.Array, values: pa.Array, nx: bool) -> list[pa.Array | bytes]:
        ttl = self.settings.ttl_seconds
        parts: list[pa.Array | bytes] = [b"SET", keys, values]
        if ttl:
            parts += [b"EX", str(ttl).encode()]
        if nx:
            parts.append(b"NX")
        return parts

    def _set(self, keys: pa.Array, values: pa.Array, nx: bool = False) -> np.ndarray:
        """SET each key; with ``nx`` returns which were set (the others existed)."""
        replies = self._link().replies(self._set_parts(keys, values, nx), len(keys), 5)  # +OK, or $-1 (NX: not set)
        return replies[:, 0] == ord("+")

    def _set_all(self, changes: Changes, kinds: tuple[int, ...], nx: bool = False) -> Iterator[np.ndarray]:
        """SET the records of ``kinds``, batch by batch; yields, per batch, which were set. A
        helper thread renders the values (DuckDB) and encodes the commands (Arrow) of the next
        chunks while this thread sends and checks replies: both halves release the GIL."""

        def encoded() -> Iterator[tuple[memoryview, int, int]]:
            for batch in changes.records.records(kinds, ordered=False):
                parts = self._set_parts(batch[TARGET], batch[VALUE], nx)
                for start, (data, count) in enumerate(encoded_chunks(parts, batch.num_rows)):
                    last = (start + 1) * PIPELINE_COMMANDS >= batch.num_rows
                    yield data, count, batch.num_rows if last else 0

        done: list[np.ndarray] = []
        # closed on any way out, so the encoder thread has stopped touching the run's DuckDB
        # connection before the engine uses it again (to roll back, say)
        with contextlib.closing(read_ahead(encoded(), depth=2, name="redis-encode")) as chunks:
            for replies, batch_rows in self._link().exchange(chunks, 5):
                done.append(replies[:, 0] == ord("+"))
                if batch_rows:  # the batch's last chunk is confirmed
                    yield np.concatenate(done)
                    done.clear()
                    changes.handed(batch_rows)

    def write(self, changes: Changes) -> SyncCounts:
        plan = changes.plan
        counts = SyncCounts()
        if self.settings.mode == "insert_only":
            for was_set in self._set_all(changes, (NEW,), nx=True):
                counts.inserted += int(was_set.sum())
            counts.unchanged = plan.records - counts.inserted
            return counts

        for _ in self._set_all(changes, (NEW, CHANGED, HEALED)):
            pass  # every reply checked (+OK) by the link
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
