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
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Optional

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table
from rich.text import Text

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
LogFormatOpt = Annotated[
    Optional[Literal["text", "json"]],
    typer.Option(
        "--log-format",
        help="logs on stderr as text, or one JSON object per line (default: ROUNDTRIP_LOG_FORMAT, text)",
    ),
]
WaitOpt = Annotated[
    float,
    typer.Option("--wait", help="seconds to wait for a DuckDB warehouse locked by another process", min=0),
]


def configure_logging(debug: bool = False, quiet: bool = False, log_format: str | None = None) -> None:
    """Logs go to stderr through rich, or as JSON lines (``--log-format json``, see
    ``roundtrip.core.logs``); ``--debug`` shows debug logs, ``--quiet`` warnings only."""
    from roundtrip.core.settings import load_settings

    level, chosen_format = logging.INFO, log_format
    try:
        settings = load_settings()
        level, chosen_format = getattr(logging, settings.log_level), log_format or settings.log_format
    except RoundtripError:
        pass  # the bad setting is reported by the command itself
    if debug:
        level = logging.DEBUG
    elif quiet:
        level = logging.WARNING
    global _quiet, _json
    _json = chosen_format == "json"
    handler: logging.Handler
    if _json:
        from roundtrip.core.logs import ConsoleLines, JsonHandler

        handler = JsonHandler()
        # what the CLI prints to stderr becomes records too: stderr stays one JSON object a line
        err_console.file, err_console.soft_wrap = ConsoleLines(), True  # type: ignore[assignment]  # a file-like
    else:
        handler = RedactingRichHandler(console=err_console, show_path=debug, rich_tracebacks=True, markup=False)
        err_console.file, err_console.soft_wrap = None, False  # type: ignore[assignment]  # None: sys.stderr
    logging.basicConfig(level=level, format="%(message)s", datefmt="%H:%M:%S", handlers=[handler], force=True)
    for noisy in ("urllib3", "botocore", "google", "py4j", "filelock", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _quiet = quiet


_quiet = False
_json = False


def is_quiet() -> bool:
    """``--quiet`` was given, the logs are JSON (no progress bars among them), or nobody is
    watching (output is not a terminal)."""
    return _quiet or _json or not err_console.is_terminal


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
    if _json:  # one record: the message, its hint, the traceback with --debug (all redacted)
        message, hint = describe(exc)
        logging.getLogger("roundtrip.cli").error(
            "%s", message, exc_info=exc if debug else None, extra={"hint": hint} if hint else None
        )
        return
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
        # typer turns Ctrl-C and `raise typer.Exit(n)` into a returned status when it is not
        # standalone: a returned status must still end the process with it
        status = app(args, standalone_mode=False)
        if isinstance(status, int) and not isinstance(status, bool) and status:
            if status == 130:
                err_console.print("[yellow]interrupted[/]")
            sys.exit(status)
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


def plain(value: Any) -> str:
    """A value as a table shows it: thousands separators, blank for None, timestamps to the
    second (one unbreakable piece: a time is never split across lines)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 1000 else f"{value:g}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def cell(value: Any) -> str:
    """``plain(value)`` with rich markup escaped (for text printed with markup on)."""
    return escape(plain(value))


def counts_text(row: dict[str, Any], names: Sequence[str]) -> str:
    """``read 5,000 · inserted 10 · unchanged 4,990``: the non-zero counts of ``names``."""
    shown = [f"{name} {row[name]:,}" for name in names if row.get(name)]
    return " · ".join(shown) if shown else "nothing"


# a value that is one piece however long: numbers, times
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:?\d{2}|Z| UTC)?$")
# where a text may break: at spaces, and after a comma (``item_ids_mv,recommendable_items_mv``)
_PIECE = re.compile(r"(\s*)([^\s,]+,?|,)")


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` cells, broken at spaces and after commas only;
    a piece longer than ``width`` stays whole on its own line (never cut)."""
    lines: list[str] = []
    line = ""
    for gap, piece in _PIECE.findall(text):
        joined = line + (gap if line else "") + piece
        if not line or cell_len(joined) <= width:
            line = joined
        else:
            lines.append(line)
            line = piece
    return [*lines, line]


@dataclass
class _Column:
    name: str
    texts: list[str]  # the header first, then one text per row
    numeric: bool
    unbreakable: bool  # numbers, times, the first column (names): never wrapped

    @property
    def natural(self) -> int:
        return max(cell_len(t) for t in self.texts)

    @property
    def minimum(self) -> int:
        """The narrowest the column can be without cutting a word (or an unbreakable value)."""
        if self.unbreakable:
            return self.natural
        return max(cell_len(piece) for text in self.texts for _, piece in [*_PIECE.findall(text), ("", "")])


def _overhead(columns: int) -> int:
    """A rich table's width beyond its cells: a space either side of each, borders between."""
    return 3 * columns + 1


def table_widths(columns: list[_Column], width: int, fold: bool) -> list[int] | None:
    """Each column's width in a table at most ``width`` wide: the natural widths, then (with
    ``fold``) the widest column narrowed first, never below its longest word. None: no fit."""
    widths = [c.natural for c in columns]
    room = width - _overhead(len(columns))
    if sum(widths) <= room:
        return widths
    minimums = [c.minimum for c in columns]
    if not fold or sum(minimums) > room:
        return None
    while sum(widths) > room:
        widest = max((i for i in range(len(widths)) if widths[i] > minimums[i]), key=lambda i: widths[i])
        widths[widest] -= 1
    return widths


def print_table(title: str, rows: list[dict[str, Any]], merge: Sequence[str] = (), merged_name: str = "counts") -> None:
    """Rows of dicts, never cutting a word:

    - a table when it fits the terminal with each column wrapped at spaces (and after commas),
      never narrower than its longest word; numbers, times and the first column (names) whole;
    - on a terminal too narrow for that, one block per record (its name, then a line per field);
    - when the output is piped (logs, ``grep``): the table if each row fits on one line in 100
      columns, else one line per record, ``field value · field value ...``, whole.

    ``merge``: count columns shown as one ``merged_name`` column of their non-zero values."""
    if not rows:
        console.print(f"{escape(title)}: nothing to report")
        return
    if merge:
        rows = [
            {k: v for k, v in r.items() if k not in merge and k != merged_name} | {merged_name: counts_text(r, merge)}
            for r in rows
        ]
    names: list[str] = []
    for row in rows:
        names += [key for key in row if key not in names]
    columns = []
    for i, key in enumerate(names):
        values = [r.get(key) for r in rows]
        texts = [plain(v) for v in values]
        numeric = all(isinstance(v, (int, float)) or v is None for v in values)
        timed = all(isinstance(v, datetime) or not t or _TIMESTAMP.match(t) for v, t in zip(values, texts))
        columns.append(_Column(key, [key, *texts], numeric, unbreakable=i == 0 or numeric or timed))
    widths = table_widths(columns, console.width, fold=console.is_terminal)
    if widths is None:
        (print_blocks if console.is_terminal else print_records)(title, columns)
        return
    table = Table(title=Text(title), title_justify="left")
    for column, width in zip(columns, widths):
        header = "\n".join(wrap(column.name, width))
        table.add_column(Text(header), justify="right" if column.numeric else "left", width=width, no_wrap=True)
    for i in range(1, len(columns[0].texts)):
        table.add_row(*(Text("\n".join(wrap(c.texts[i], w))) for c, w in zip(columns, widths)))
    console.print(table)


def print_records(title: str, columns: list[_Column]) -> None:
    """One line per record, ``field value`` of each field that has one, joined by `` · ``;
    never folded (``grep`` finds a whole record)."""
    console.print(Text(f"{title}:"), soft_wrap=True)
    for i in range(1, len(columns[0].texts)):
        pairs = [f"{c.name} {c.texts[i]}" for c in columns if c.texts[i]]
        console.print(Text("  " + " · ".join(pairs)), soft_wrap=True)


def print_blocks(title: str, columns: list[_Column]) -> None:
    """One block per record, for a terminal too narrow for the table: ``field: value`` lines
    under the record's name, values wrapped at spaces to the terminal's width."""
    console.print(Text(title, style="italic"))
    first, others = columns[0], columns[1:]
    label = max(cell_len(c.name) for c in others) if others else 0
    room = max(console.width - label - 4, 20)
    for i in range(1, len(first.texts)):
        console.print(Text(f"{first.name} {first.texts[i]}", style="bold"), soft_wrap=True)
        for column in others:
            if not column.texts[i]:
                continue
            lines = wrap(column.texts[i], room)
            console.print(Text(f"  {column.name:<{label}}  {lines[0]}"), soft_wrap=True)
            for more in lines[1:]:
                console.print(Text(" " * (label + 4) + more), soft_wrap=True)


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
