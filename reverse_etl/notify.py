"""Notification hooks: who hears about a `roundtrip sync` invocation that failed.

Two kinds, each optional, global (``ROUNDTRIP_SYNC_NOTIFY_URL`` / ``ROUNDTRIP_SYNC_NOTIFY_COMMAND``:
the whole invocation's results) or per sync (``meta.sync.notify: {url, command}``: that sync's
result only, when it is the one that failed):

- a webhook: an HTTP POST of the results (``application/json``), by the standard library;
- a shell command: the results on its stdin (a pager, a mailer, a script of the team's own).

``${NAME}`` in a URL or command is read from the environment when the hook fires, so that a
webhook's token (a Slack or Teams URL is one) lives in the environment, never in the dbt project.
A hook that fails (unreachable, an HTTP error, a non-zero exit, too slow) logs a warning and
changes nothing else: the invocation ends with the status its syncs gave it. The payload is the
results document, whose texts are redacted; it never holds row values or connection URLs.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, model_validator

from roundtrip.core.redact import redact

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT = 10.0  # seconds for the whole POST
COMMAND_TIMEOUT = 60.0  # seconds before the command (and what it started) is killed
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class NotifySettings(BaseModel):
    """``meta.sync.notify``: where this sync's failures are sent."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    command: str | None = None

    @model_validator(mode="after")
    def _check(self) -> NotifySettings:
        if not self.url and not self.command:
            raise ValueError("notify needs a url, a command, or both")
        if self.url and not re.match(r"^(https?://|\$\{)", self.url):
            raise ValueError(f"notify.url must be an http(s) URL (or ${{VARIABLE}}), got {redact(self.url)!r}")
        return self


@dataclass(frozen=True)
class Hook:
    url: str | None = None
    command: str | None = None
    origin: str = "settings"  # where it was declared, for messages: settings, or the sync's name


def expand(text: str, origin: str) -> str | None:
    """``${NAME}`` replaced from the environment; None (and a warning) when one is not set."""
    missing = [name for name in _VARIABLE.findall(text) if name not in os.environ]
    if missing:
        log.warning("notify hook of %s: %s not set; the hook is skipped", origin, ", ".join(missing))
        return None
    return _VARIABLE.sub(lambda m: os.environ[m.group(1)], text)


def fire(hook: Hook, payload: bytes) -> None:
    """Send ``payload`` to the hook's URL and command; never raises."""
    if hook.url:
        try:
            url = expand(hook.url, hook.origin)
            if url:
                post(url, payload)
        except Exception as exc:  # a hook never changes the run's outcome
            log.warning("notify webhook of %s failed: %s", hook.origin, redact(exc))
    if hook.command:
        try:
            command = expand(hook.command, hook.origin)
            if command:
                run_command(command, payload)
        except Exception as exc:
            log.warning("notify command of %s failed: %s", hook.origin, redact(exc))


def where(url: str) -> str:
    """The URL as messages show it: scheme and host only (a webhook's path is often its secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}/…"


def post(url: str, payload: bytes) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {where(url)}")
    request = urllib.request.Request(
        url,
        data=payload,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "roundtrip-sync-notify"},
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{where(url)} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RuntimeError(f"{where(url)} unreachable: {reason}") from None
    log.info("notified %s (HTTP %d)", where(url), status)


def run_command(command: str, payload: bytes) -> None:
    """``command`` through the shell, ``payload`` on its stdin; killed with its children
    (its own process group) past ``COMMAND_TIMEOUT``."""
    process = subprocess.Popen(
        command,
        shell=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, err = process.communicate(payload, timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise RuntimeError(f"still running after {COMMAND_TIMEOUT:g} s: killed") from None
    if process.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise RuntimeError(f"exit status {process.returncode}" + (f": {' / '.join(tail)}" if tail else ""))
    log.info("notify command ran (exit status 0)")
