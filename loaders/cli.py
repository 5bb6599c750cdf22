"""``python -m loaders``: copy app data into the warehouse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from loaders import jobs
from loaders.config import load_config
from loaders.errors import LoaderError
from loaders.warehouse import open_warehouse
from roundtrip.cli_support import configure_logging, console, print_table, run_cli

app = typer.Typer(help="Load app data (SQLite, Postgres, event files) into the warehouse.", no_args_is_help=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="loaders.yml (default: loaders/loaders.yml)")]
TargetOpt = Annotated[Optional[str], typer.Option("--target", help="duckdb (default), postgres, bigquery")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the counts as JSON lines")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="tracebacks and debug logs")]


def _report(title: str, reports: list[jobs.TableReport], as_json: bool) -> None:
    if as_json:
        for r in reports:
            console.print_json(json.dumps(r.as_dict()))
    else:
        print_table(title, [r.as_dict() for r in reports])


def _pick(available: dict, name: str | None, kind: str) -> dict:  # type: ignore[type-arg]
    if name is None:
        return available
    if name not in available:
        raise LoaderError(f"no {kind} source named {name!r} in loaders.yml (have: {', '.join(available) or 'none'})")
    return {name: available[name]}


@app.command()
def sqlite(
    source: Annotated[Optional[str], typer.Option(help="source name in loaders.yml (default: all)")] = None,
    full_refresh: Annotated[bool, typer.Option("--full-refresh", help="ignore stored watermarks")] = False,
    config: ConfigOpt = None,
    target: TargetOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """SQLite tables -> warehouse (MERGE on keys, incremental by cursor)."""
    configure_logging(debug)
    cfg = load_config(config)
    warehouse = open_warehouse(target)
    try:
        reports = [
            r
            for name, src in _pick(cfg.sqlite, source, "sqlite").items()
            for r in jobs.load_sqlite(name, src, warehouse, full_refresh)
        ]
    finally:
        warehouse.close()
    _report("sqlite -> warehouse", reports, as_json)


@app.command()
def sql(
    source: Annotated[Optional[str], typer.Option(help="source name in loaders.yml (default: all)")] = None,
    full_refresh: Annotated[bool, typer.Option("--full-refresh", help="ignore stored watermarks")] = False,
    config: ConfigOpt = None,
    target: TargetOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """SQL database tables (the Postgres catalog) -> warehouse."""
    configure_logging(debug)
    cfg = load_config(config)
    warehouse = open_warehouse(target)
    try:
        reports = [
            r
            for name, src in _pick(cfg.sql, source, "sql").items()
            for r in jobs.load_sql(name, src, warehouse, full_refresh)
        ]
    finally:
        warehouse.close()
    _report("sql -> warehouse", reports, as_json)


@app.command()
def files(
    stream: Annotated[Optional[str], typer.Option(help="stream name in loaders.yml (default: all)")] = None,
    config: ConfigOpt = None,
    target: TargetOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Event files -> bronze, each file once (a changed file replaces its rows)."""
    configure_logging(debug)
    cfg = load_config(config)
    warehouse = open_warehouse(target)
    try:
        reports = [jobs.load_files(name, s, warehouse) for name, s in _pick(cfg.files, stream, "files").items()]
    finally:
        warehouse.close()
    _report("files -> bronze", reports, as_json)


def main() -> None:
    run_cli(app)
