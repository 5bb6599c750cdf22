"""What every CLI of the project shares: logging set up once, one error handler, printing."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from roundtrip.errors import RoundtripError

console = Console(stderr=False)
err_console = Console(stderr=True)
if not console.is_terminal:  # logs and CI: wide enough for the summary tables
    console.width = 160
    err_console.width = 160


def configure_logging(debug: bool = False) -> None:
    level = (
        logging.DEBUG
        if debug
        else getattr(logging, os.environ.get("ROUNDTRIP_LOG_LEVEL", "INFO").upper(), logging.INFO)
    )
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="%H:%M:%S",
        handlers=[RichHandler(console=err_console, show_path=debug, rich_tracebacks=True)],
        force=True,
    )
    for noisy in ("urllib3", "botocore", "google", "py4j", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_cli(app: Callable[..., Any], argv: Sequence[str] | None = None) -> None:
    """Run a typer app: a RoundtripError becomes one clear line on stderr and exit code 1
    (the traceback only with ``--debug``)."""
    debug = "--debug" in (argv if argv is not None else sys.argv)
    try:
        app(standalone_mode=False) if argv is None else app(list(argv), standalone_mode=False)
    except RoundtripError as exc:
        if debug:
            err_console.print_exception()
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print(f"{title}: nothing to report")
        return
    table = Table(title=title, title_justify="left")
    for key in rows[0]:
        table.add_column(key, justify="right" if isinstance(rows[0][key], (int, float)) else "left")
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v) for v in row.values()))
    console.print(table)
