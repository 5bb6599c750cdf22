"""A connection to Redis of our own, for commands in bulk: the edge of the Redis driver.

The handshake (AUTH, SELECT) and TLS come from a ``redis://`` or ``rediss://`` URL. Commands are
encoded in the Redis protocol (RESP) by Arrow compute kernels, a batch at a time; chunk n+1 is on
the wire before chunk n's replies are read. Replies of fixed size (``+OK``, ``:0``, ``:1``,
``$-1``) are read as bytes and checked with NumPy; others (``GET``) are parsed by hiredis. Every
error leaves this module classified (``errors.from_redis``): a lost connection is transient, a
refused password terminal.
"""

from __future__ import annotations

import socket
import ssl
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from reverse_etl.errors import SyncError, from_redis

PIPELINE_COMMANDS = 10_000  # commands per round trip: bounds the buffers on both sides


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


WRONG_TYPE = b"\x00not a string"  # NUL never starts a value the sync writes (NUL is rejected)


class RedisLink:
    """One connection to Redis; ``what`` names the sync in its errors."""

    def __init__(self, url: str, what: str, timeout: float = 10.0) -> None:
        parts = urlparse(url)
        if parts.scheme not in ("redis", "rediss"):
            raise SyncError(f"{what}: the Redis URL must be redis:// or rediss://, got {parts.scheme or 'no scheme'!r}")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.db = int((parts.path or "/").lstrip("/") or 0)
        self.tls = parts.scheme == "rediss"
        self.timeout = timeout
        self.what = what
        self.sock: Any = None

    # ---------------------------------------------------------------- the edge

    def _fail(self, exc: BaseException) -> SyncError:
        self.close()
        return from_redis(exc, self.what)

    def connect(self) -> None:
        import redis

        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        except OSError as exc:
            raise self._fail(
                redis.exceptions.ConnectionError(f"cannot connect to Redis at {self.host}:{self.port}: {exc}")
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
                if command[0] == b"AUTH" or "NOAUTH" in str(reply) or "WRONGPASS" in str(reply):
                    raise self._fail(redis.exceptions.AuthenticationError(str(reply)))
                raise self._fail(redis.exceptions.ResponseError(str(reply)))

    def call(self, command: list[bytes]) -> Any:
        """One command, its one reply (an error reply is returned as an exception, not raised)."""
        import hiredis

        if self.sock is None:
            self.connect()
        try:
            self.sock.sendall(b"*%d\r\n" % len(command) + b"".join(bulk(a) for a in command))
            reader = hiredis.Reader()
            while (reply := reader.gets()) is False:
                reader.feed(self._recv())
        except OSError as exc:
            raise self._fail(exc) from exc
        return reply

    def server_id(self) -> str:
        """The server's ``run_id``: a new one at every start of redis-server (a restart may have
        lost keys, or brought back an older snapshot)."""
        reply = self.call([b"INFO", b"server"])
        if isinstance(reply, Exception):
            raise self._fail(reply)
        for line in reply.decode().splitlines():
            if line.startswith("run_id:"):
                return str(line.split(":", 1)[1].strip())
        return "unknown"

    def _recv(self) -> bytes:
        import redis

        try:
            data: bytes = self.sock.recv(1 << 20)
        except OSError as exc:
            raise redis.exceptions.ConnectionError(f"Redis connection lost: {exc}") from exc
        if not data:
            raise redis.exceptions.ConnectionError("Redis closed the connection")
        return data

    # ---------------------------------------------------------------- bulk commands

    def replies(self, parts: list[pa.Array | bytes], count: int, width: int) -> np.ndarray:
        """Send ``count`` commands (arguments ``parts``) and return their replies as a
        (count, width) byte matrix: every reply these commands get is ``width`` bytes long
        (``+OK``/``$-1`` 5, ``:0``/``:1`` 4). An error reply fails the run."""
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
        except SyncError:
            raise
        except (OSError, redis.exceptions.RedisError) as exc:
            raise self._fail(exc) from exc

    def _read(self, buffer: bytearray, count: int, tag: Any, width: int) -> tuple[np.ndarray, Any]:
        import redis

        size = count * width
        while len(buffer) < size:
            buffer += self._recv()  # an error reply is longer than ours: this ends with one too
        replies = np.frombuffer(bytes(buffer[:size]), dtype=np.uint8)
        # the first error reply starts where a reply of ours would: column 0 shows it
        if len(replies) != size or (replies.reshape(count, width)[:, 0] == ord("-")).any():
            message = self._first_error(bytes(buffer))
            raise self._fail(redis.exceptions.ResponseError(message))
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

    def values(self, keys: pa.Array, command: bytes = b"GET") -> list[Any]:
        """``command`` (GET, PTTL) of each key, its replies parsed (None for a missing key;
        ``WRONG_TYPE`` for a key that is not a string, which equals no value the sync writes)."""
        import hiredis

        if self.sock is None:
            self.connect()
        out: list[Any] = []
        try:
            for data, count in encoded_chunks([command, keys], len(keys)):
                self.sock.sendall(data)
                reader = hiredis.Reader()
                got = 0
                while got < count:
                    reply = reader.gets()
                    if reply is False:
                        reader.feed(self._recv())
                        continue
                    if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("WRONGTYPE"):
                        reply = WRONG_TYPE  # a key made a list or a hash by hand: differs, to be rewritten
                    elif isinstance(reply, hiredis.ReplyError):
                        raise self._fail(reply)
                    out.append(reply)
                    got += 1
        except SyncError:
            raise
        except Exception as exc:
            raise self._fail(exc) from exc
        return out

    def scan(self, pattern: str, count: int = 1000) -> Iterator[list[bytes]]:
        """The keys matching ``pattern``, a SCAN page at a time."""
        cursor = b"0"
        while True:
            reply = self.call([b"SCAN", cursor, b"MATCH", pattern.encode(), b"COUNT", str(count).encode()])
            if isinstance(reply, Exception):
                raise self._fail(reply)
            cursor, keys = reply
            if keys:
                yield list(keys)
            if cursor == b"0":
                return

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
