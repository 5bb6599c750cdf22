"""Structured logs: one JSON object per line on stderr (``--log-format json``), for schedulers
and log pipelines that parse what a command says.

Each line has ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the fields of the
context it was logged in (``log_context(sync=...)``: the sync a line is about), a logger's own
``extra`` fields (``error``, ``hint``, ...) and, when a traceback was logged, ``exception``.
Every text passes the one redaction (``roundtrip.core.redact``) as the text logs do.

Whatever else the CLI prints to stderr (an ``error:`` line, a sync's ``failed:`` line) becomes a
record too (logger ``roundtrip.cli``), so that stderr stays one JSON object per line.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from roundtrip.core.redact import redact

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("roundtrip_log_context", default={})  # noqa: B039 (never mutated)

# what every LogRecord carries; anything else on a record came from ``extra=`` and is shown
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# the first word of a line the CLI prints to stderr, and the level it stands for
_LEVEL_OF_PREFIX = {
    "error": logging.ERROR,
    "failed": logging.ERROR,
    "blocked": logging.ERROR,
    "invalid": logging.ERROR,
    "locked": logging.WARNING,
    "warning": logging.WARNING,
    "interrupted": logging.WARNING,
}


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Every record logged inside (in this thread or task) carries ``fields``."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON, secrets redacted."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in _context.get().items():
            out[key] = _safe(value)
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = _safe(value)
        if record.exc_info and record.exc_info[0] is not None:
            out["exception"] = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
        return json.dumps(out, ensure_ascii=False, default=str)


class JsonHandler(logging.Handler):
    """JSON lines on stderr (looked up at each write, so a redirected ``sys.stderr`` is honoured)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


class ConsoleLines:
    """A file for a rich Console: each line printed to it becomes a log record of ``logger``,
    at the level its first word names (``error:`` -> ERROR), INFO otherwise."""

    def __init__(self, logger: str = "roundtrip.cli") -> None:
        self.log = logging.getLogger(logger)
        self._pending = ""
        self._last_level = logging.INFO  # a ``hint:`` line goes with the line before it

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            self._emit(line)

    def isatty(self) -> bool:
        return False

    def _emit(self, line: str) -> None:
        text = line.rstrip()
        if not text.strip():
            return
        first = text.strip().split(":", 1)[0].lower()  # "error: ...", or a whole word: "interrupted"
        level = self._last_level if first == "hint" else _LEVEL_OF_PREFIX.get(first, logging.INFO)
        self._last_level = level
        self.log.log(level, "%s", text.strip())
