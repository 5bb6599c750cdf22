"""What happens after every `roundtrip sync run|verify` (dbt's postflight): the results file
is written (``run_results.py``) and, when the invocation failed, the hooks are called
(``notify.py``), whatever it ended with: results, an error, an exit status, an interrupt.

A command declares itself with ``@recorded("run")``; its body tells the invocation what it chose
and what came of it (``current().selected(...)``, ``.add_results(...)``). A failure to write the
file or to notify is a warning: it never changes the invocation's own outcome.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from reverse_etl import run_results
from reverse_etl.notify import Hook, fire
from reverse_etl.results import SyncResult
from reverse_etl.spec import InvalidSync, SyncSpec
from roundtrip.core.redact import redact

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_current: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar("sync_invocation", default=None)
# command arguments never copied into the document
_NOT_ARGS = ("debug", "quiet")
# the commands whose failures are notified: those that write (a plan or a dry run pages nobody)
NOTIFYING = ("run", "apply", "verify")


def current() -> Invocation | None:
    """The invocation the running command records, if any (None outside a recorded command)."""
    return _current.get()


class Invocation:
    def __init__(self, command: str, args: dict[str, Any]) -> None:
        self.command = command
        self.args = {k: _plain(v) for k, v in args.items() if k not in _NOT_ARGS}
        self.id = str(uuid.uuid4())
        self.started_at = datetime.now(UTC)
        self._clock = time.perf_counter()
        self.target: str | None = None
        self.chosen: list[SyncSpec] = []
        self.invalid: list[InvalidSync] = []
        self.entries: dict[str, dict[str, Any]] = {}  # sync name -> its entry
        self.error: str | None = None
        self.hint: str | None = None
        self.exit_code = 0

    # ---------------------------------------------------------------- told by the command

    def selected(self, target: str, chosen: list[SyncSpec], invalid: list[InvalidSync]) -> None:
        self.target, self.chosen, self.invalid = target, list(chosen), list(invalid)
        for broken in invalid:
            self.entries[broken.name] = run_results.invalid_entry(broken)

    def add_results(self, results: list[SyncResult]) -> None:
        for result in results:
            self.entries[result.spec.name] = run_results.sync_entry(result)

    def add_verification(self, reports: list[Any], repaired: list[SyncResult]) -> None:
        """``verify``: each report's counts (samples of keys left out), and the repair run's result."""
        by_name = {r.spec.name: r for r in repaired}
        specs = {s.name: s for s in self.chosen}
        for report in reports:
            found = {k: v for k, v in report.as_dict().items() if k != "sample"}
            entry = run_results.describe_spec(specs[report.sync]) if report.sync in specs else {"sync": report.sync}
            entry |= {"status": "differs" if report.problems else "verified"} | found
            if report.sync in by_name:
                entry["repair"] = run_results.sync_entry(by_name[report.sync])
            self.entries[report.sync] = entry

    def fail(self, exc: BaseException) -> None:
        """The invocation as a whole failed (a server down before any sync ran, a bad manifest)."""
        from roundtrip.core.cli import describe

        message, hint = describe(exc)
        self.error, self.hint = redact(message), redact(hint) if hint else None

    # ---------------------------------------------------------------- at the end

    def document(self) -> dict[str, Any]:
        completed = datetime.now(UTC)
        results = []
        for spec in self.chosen:
            entry = self.entries.get(spec.name)
            if entry is None:
                status = "interrupted" if self.exit_code == 130 else "failed"
                entry = run_results.missing_entry(spec, status, self.error, self.hint)
            results.append(entry)
        chosen = {s.name for s in self.chosen}
        results += [e for name, e in self.entries.items() if name not in chosen]
        return {
            "metadata": {
                "schema": run_results.SCHEMA,
                "invocation_id": self.id,
                "generated_at": run_results.timestamp(),
            },
            "command": self.command,
            "args": self.args,
            "target": self.target,
            "started_at": run_results.timestamp(self.started_at),
            "completed_at": run_results.timestamp(completed),
            "elapsed_seconds": round(time.perf_counter() - self._clock, 3),
            "status": run_results.STATUS_OF_EXIT.get(self.exit_code, "failed"),
            "exit_code": self.exit_code,
            "error": self.error,
            "hint": self.hint,
            "results": results,
        }

    def close(self) -> None:
        """Write the document; call the hooks when it failed. Never raises."""
        try:
            from roundtrip.core.settings import load_settings

            settings = load_settings()
        except Exception as exc:  # a bad setting: the command reported it already
            log.debug("no results file: %s", exc)
            return
        document = self.document()
        payload = run_results.encode(document)
        path = Path(self.args.get("results_path") or run_results.default_path(settings.data_dir))
        if path.is_dir():  # a folder: the file goes inside, under its usual name
            path = path / run_results.FILE_NAME
        try:
            run_results.write_atomically(path, payload)
            log.debug("results written to %s", path)
        except Exception as exc:
            log.warning("results file %s not written: %s", path, redact(exc))
        if self.exit_code == 1 and self.command in NOTIFYING and not self.args.get("dry_run"):
            global_hook = Hook(settings.secret("sync_notify_url"), settings.sync_notify_command, "settings")
            self._notify(document, payload, global_hook)

    def _notify(self, document: dict[str, Any], payload: bytes, global_hook: Hook) -> None:
        if global_hook.url or global_hook.command:
            fire(global_hook, payload)
        for spec in self.chosen:
            notify = getattr(spec.settings, "notify", None)
            entry = self.entries.get(spec.name) or next(
                (e for e in document["results"] if e["sync"] == spec.name), None
            )
            if notify is None or entry is None or not _failing(entry):
                continue
            # the sync's own hooks hear about the sync alone; one equal to the global hook is not called twice
            url = notify.url if notify.url != global_hook.url else None
            command = notify.command if notify.command != global_hook.command else None
            if url or command:
                own = document | {"results": [entry]}
                fire(Hook(url, command, f"sync {spec.name}"), run_results.encode(own))


def _failing(entry: dict[str, Any]) -> bool:
    repair = entry.get("repair") or {}
    return entry.get("status") in run_results.FAILING or repair.get("status") in run_results.FAILING


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def recorded(command: str) -> Callable[[F], F]:
    """Decorate a typer command: its invocation is recorded and notified (see the module)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            invocation = Invocation(command, kwargs)
            token = _current.set(invocation)
            try:
                out = fn(*args, **kwargs)
                invocation.exit_code = 0
                return out
            except SystemExit as exc:
                invocation.exit_code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                raise
            except KeyboardInterrupt:
                invocation.exit_code = 130
                raise
            except Exception as exc:
                invocation.exit_code = getattr(exc, "exit_code", 1) if _is_exit(exc) else 1
                if not _is_exit(exc):
                    invocation.fail(exc)
                raise
            finally:
                _current.reset(token)
                invocation.close()

        return wrapper  # type: ignore[return-value]

    return decorate


def _is_exit(exc: BaseException) -> bool:
    """click's and typer's own ways to end a command with a status."""
    return type(exc).__name__ == "Exit" and hasattr(exc, "exit_code")
