"""What every CLI of the project shares: its options, logging set up once, one error path,
printing.

One error path: whatever a command raises ends as one line on stderr (``error: what failed``,
then ``hint: what to do``), credentials redacted, exit status 1; the traceback only with
``--debug``. Project errors carry their own message and hint; the usual foreign ones (a YAML
file that does not parse, a refused connection, a locked DuckDB file, a bad setting) are
described here, so no command shows a driver's traceback to a user.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, Literal, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from roundtrip.core.errors import RoundtripError
from roundtrip.core.redact import redact

# no emoji codes (`reco:100:` is not `:100:`); rich itself honours NO_COLOR and writes no
# colour codes when its output is not a terminal
console = Console(stderr=False, emoji=False)
err_console = Console(stderr=True, emoji=False)
TABLE_WIDTH = 100  # logs and CI: tables fit 100 columns
if not console.is_terminal:
    console.width = TABLE_WIDTH
if not err_console.is_terminal:
    err_console.width = 160

EXIT_FAILED = 1

# ---------------------------------------------------------------- options shared by every CLI

DebugOpt = Annotated[bool, typer.Option("--debug", help="debug logs, and the traceback of an error")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars and no info logs")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print each result as one JSON object per line")]
TargetOpt = Annotated[
    Optional[Literal["duckdb", "postgres", "bigquery"]],
    typer.Option("--target", help="the warehouse: duckdb, postgres or bigquery (default: ROUNDTRIP_TARGET, duckdb)"),
]
WaitOpt = Annotated[
    float,
    typer.Option("--wait", help="seconds to wait for a DuckDB warehouse locked by another process", min=0),
]


def configure_logging(debug: bool = False, quiet: bool = False) -> None:
    """Logs go to stderr through rich; ``--debug`` shows debug logs, ``--quiet`` warnings only."""
    from roundtrip.core.settings import load_settings

    if debug:
        level = logging.DEBUG
    elif quiet:
        level = logging.WARNING
    else:
        try:
            level = getattr(logging, load_settings().log_level)
        except RoundtripError:
            level = logging.INFO  # the bad setting is reported by the command itself
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="%H:%M:%S",
        handlers=[RedactingRichHandler(console=err_console, show_path=debug, rich_tracebacks=True, markup=False)],
        force=True,
    )
    for noisy in ("urllib3", "botocore", "google", "py4j", "filelock", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    global _quiet
    _quiet = quiet


_quiet = False


def is_quiet() -> bool:
    """``--quiet`` was given, or nobody is watching (output is not a terminal)."""
    return _quiet or not err_console.is_terminal


class RedactingRichHandler(RichHandler):
    """Every log line with credentials masked, whatever the caller formatted into it, and its
    traceback too: the exception is rendered as text here and redacted, never by rich's
    traceback renderer (which prints the exception's own message, a DSN with its password)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[0] is not None:
            trace = "".join(traceback.format_exception(*record.exc_info))
            record = logging.makeLogRecord(record.__dict__)
            record.msg, record.args = f"{record.getMessage()}\n{trace.rstrip()}", None
            record.exc_info, record.exc_text = None, None
        super().emit(record)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


# ---------------------------------------------------------------- the error path


def describe(exc: BaseException) -> tuple[str, str | None]:
    """(message, hint) for an exception: ours carry both; common foreign ones get both here."""
    if isinstance(exc, RoundtripError):
        return str(exc), exc.hint
    kind, module, text = type(exc).__name__, type(exc).__module__, str(exc).strip()
    first = text.splitlines()[0] if text else kind
    if module.startswith("yaml"):
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        name = getattr(mark, "name", None) or "a YAML file"
        problem = getattr(exc, "problem", None) or first
        return f"{name} is not valid YAML{where}: {problem}", "fix the file (indentation, quotes, colons)"
    if module.startswith("psycopg") and kind in ("OperationalError", "ConnectionTimeout"):
        return (
            f"cannot connect to Postgres: {first}",
            "is the server up, and are ROUNDTRIP_POSTGRES_URL / ROUNDTRIP_WAREHOUSE_URL right?",
        )
    if module.startswith("redis") and "Connection" in kind:
        return f"cannot connect to Redis: {first}", "is the server up, and is ROUNDTRIP_REDIS_URL right?"
    if module.startswith(("duckdb", "_duckdb")) and "lock" in text.lower():
        from roundtrip.core.duckdb_extensions import lock_holder

        return (
            f"the DuckDB warehouse is in use by {lock_holder(text) or 'another process'}",
            "retry when it ends, or pass --wait SECONDS",
        )
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return f"connection failed: {first}", None
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename or first}", None
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or first}", None
    return f"unexpected {kind}: {first}", "run again with --debug for the traceback"


def report_error(exc: BaseException, debug: bool) -> None:
    if debug:  # as text, redacted: a driver's message may repeat a connection string
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        err_console.print(escape(redact(trace.rstrip())), highlight=False, soft_wrap=True)
    message, hint = describe(exc)
    # soft_wrap: one line however long (a path, a command), never folded at the console width
    err_console.print(f"[bold red]error:[/] {escape(redact(message))}", soft_wrap=True)
    if hint:
        err_console.print(f"[dim]hint:[/] {escape(redact(hint))}", soft_wrap=True)


def run_cli(app: Callable[..., Any], argv: Sequence[str] | None = None) -> None:
    """Run a typer app through the one error path (see the module docstring)."""
    args = list(argv) if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    try:
        app(args, standalone_mode=False)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except SystemExit:
        raise
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(EXIT_FAILED)
    except Exception as exc:
        if isinstance(exc, typer.TyperException) and hasattr(exc, "show"):  # usage errors: click's own text
            exc.show()
            sys.exit(getattr(exc, "exit_code", 2))
        report_error(exc, debug)
        sys.exit(EXIT_FAILED)


# ---------------------------------------------------------------- printing


def cell(value: Any) -> str:
    """A value as a table shows it: thousands separators, blank for None, user text escaped."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 1000 else f"{value:g}"
    if isinstance(value, (list, tuple)):
        return escape(", ".join(str(v) for v in value))
    return escape(str(value))


def counts_text(row: dict[str, Any], names: Sequence[str]) -> str:
    """``read 5,000 · inserted 10 · unchanged 4,990``: the non-zero counts of ``names``."""
    shown = [f"{name} {row[name]:,}" for name in names if row.get(name)]
    return " · ".join(shown) if shown else "nothing"


def print_table(title: str, rows: list[dict[str, Any]], merge: Sequence[str] = (), merged_name: str = "counts") -> None:
    """Rows of dicts as one table that fits the terminal (100 columns in logs) without cutting
    the first column (names): other text columns fold. ``merge``: count columns shown as one
    ``merged_name`` column of their non-zero values, so that wide results still fit."""
    if not rows:
        console.print(f"{escape(title)}: nothing to report")
        return
    if merge:
        rows = [
            {k: v for k, v in r.items() if k not in merge and k != merged_name} | {merged_name: counts_text(r, merge)}
            for r in rows
        ]
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    table = Table(title=escape(title), title_justify="left")
    for i, key in enumerate(columns):
        values = [r.get(key) for r in rows]
        numeric = all(isinstance(v, (int, float)) or v is None for v in values)
        if i == 0:  # the names: never cut, never folded
            width = max(len(cell(v)) for v in [key, *values])
            table.add_column(escape(key), no_wrap=True, min_width=width, justify="right" if numeric else "left")
        elif numeric:
            table.add_column(escape(key), justify="right", no_wrap=True)
        elif max(len(cell(v)) for v in [key, *values]) <= 24:  # identifiers, statuses: whole
            table.add_column(escape(key), no_wrap=True)
        else:  # long text (counts, errors, paths): folds at spaces
            table.add_column(escape(key), overflow="fold", ratio=1)
    for row in rows:
        table.add_row(*(cell(row.get(key)) for key in columns))
    console.print(table)


# ---------------------------------------------------------------- progress


class ProgressBoard:
    """Progress of long work on stderr (rich): one line per task, advanced by counts; nothing
    at all with ``--quiet`` or when nobody watches (stderr is not a terminal). Use as a
    context manager; ``advance(task, n, total=None)`` is safe from any thread."""

    def __init__(self, unit: str = "rows") -> None:
        self.unit = unit
        self.enabled = not is_quiet()
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressBoard:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeElapsedColumn(),
                console=err_console,
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, task: str, n: int = 1, total: int | None = None) -> None:
        if self._progress is None:
            return
        if task not in self._tasks:
            self._tasks[task] = self._progress.add_task(escape(task), total=total)
        elif total is not None:
            self._progress.update(self._tasks[task], total=total)
        self._progress.advance(self._tasks[task], n)

    def done(self, task: str) -> None:
        """Mark a task complete (its total becomes what was counted)."""
        if self._progress is not None and task in self._tasks:
            tid = self._tasks[task]
            self._progress.update(tid, total=self._progress.tasks[tid].completed)


@contextlib.contextmanager
def step(description: str) -> Iterator[None]:
    """A long step: a spinner with the elapsed time while it runs (on a terminal, without
    ``--quiet``), then one line with its duration, logged."""
    started = time.perf_counter()
    if is_quiet():
        yield
    else:
        with err_console.status(f"{escape(description)} ...", spinner="dots"):
            yield
    logging.getLogger("roundtrip").info("%s: %.1f s", description, time.perf_counter() - started)
