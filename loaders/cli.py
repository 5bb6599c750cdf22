"""``python -m loaders``: copy app data into the warehouse, and warehouse tables out as Parquet.

Every command prints what it did (rows read, inserted, updated, unchanged, deleted, rejected,
held back, files, seconds) as a table, or as JSON lines with ``--json``.

Exit status: 0 done; 2 done, but some lines, files or values were held back (``files``:
``python -m loaders quarantine`` lists them); 1 failed (one line on stderr: what and why).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from loaders import jobs, state
from loaders.config import FileStreamConfig, LoadersConfig, load_config
from loaders.errors import LoaderError
from loaders.warehouse import Warehouse, open_warehouse
from roundtrip.core.cli import (
    DebugOpt,
    JsonOpt,
    ProgressBoard,
    QuietOpt,
    TargetOpt,
    WaitOpt,
    configure_logging,
    err_console,
    print_table,
    run_cli,
)

app = typer.Typer(help="Load app data into the warehouse; export warehouse tables as Parquet.", no_args_is_help=True)
EXIT_HELD_BACK = 2

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="loaders.yml (default: loaders/loaders.yml)")]
FullRefreshOpt = Annotated[bool, typer.Option("--full-refresh", help="ignore stored watermarks: read everything")]
DateOpt = Annotated[
    Optional[str], typer.Option("--date", help="the export day, YYYYMMDD or YYYY-MM-DD (default: today)")
]
T = TypeVar("T")


LOAD_COUNTS = (
    "read", "inserted", "updated", "unchanged", "deleted", "rejected", "held_back",
    "files_loaded", "files_skipped", "files_moved",
)  # fmt: skip


def _report(title: str, rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for row in rows:  # one JSON object per line, for scripts
            print(json.dumps(row, default=str))
    elif rows and "read" in rows[0]:  # loads: their counts in one column, so the table fits
        print_table(title, rows, merge=LOAD_COUNTS, merged_name="what happened")
    else:
        print_table(title, rows)


def _pick(available: dict[str, T], name: str | None, kind: str) -> dict[str, T]:
    if name is None:
        return available
    if name not in available:
        raise LoaderError(f"no {kind} named {name!r} in loaders.yml (have: {', '.join(available) or 'none'})")
    return {name: available[name]}


def _day(text: str | None) -> date:
    if text is None:
        return date.today()
    for pattern in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    raise LoaderError(f"--date {text!r} is not YYYYMMDD or YYYY-MM-DD")


def _run(
    target: str | None,
    work: Callable[[Warehouse, LoadersConfig], list[dict[str, Any]]],
    config: Path | None,
    wait: float = 0,
) -> list[dict[str, Any]]:
    cfg = load_config(config)
    warehouse = open_warehouse(target, wait=wait)
    try:
        return work(warehouse, cfg)
    finally:
        warehouse.close()


def _database_command(kind: str, title: str, doc: str) -> Callable[..., None]:
    """``sqlite`` and ``sql``: the sources of one kind in loaders.yml -> warehouse."""
    by_kind: dict[str, Callable[..., list[jobs.TableReport]]] = {"sqlite": jobs.load_sqlite, "sql": jobs.load_sql}
    load = by_kind[kind]

    def command(
        source: Annotated[Optional[str], typer.Option(help="source name in loaders.yml (default: all)")] = None,
        full_refresh: FullRefreshOpt = False,
        config: ConfigOpt = None,
        target: TargetOpt = None,
        as_json: JsonOpt = False,
        wait: WaitOpt = 0,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        configure_logging(debug, quiet)
        with ProgressBoard("rows read") as board:
            rows = _run(
                target,
                lambda wh, cfg: [
                    r.as_dict()
                    for name, src in _pick(getattr(cfg, kind), source, f"{kind} source").items()
                    for r in load(name, src, wh, full_refresh, progress=board.advance)
                ],
                config,
                wait,
            )
        _report(title, rows, as_json)

    command.__doc__ = doc
    return command


app.command("sqlite")(
    _database_command(
        "sqlite", "sqlite -> warehouse", "SQLite tables -> warehouse (staging + MERGE on keys, incremental by cursor)."
    )
)
app.command("sql")(
    _database_command(
        "sql", "sql -> warehouse", "SQL database tables (Postgres, MySQL/MariaDB, SQLite; the catalog) -> warehouse."
    )
)


# ---- bigquery: tables of any project -> warehouse (kept in one block) ----


@app.command("bigquery")
def bigquery_cmd(
    source: Annotated[Optional[str], typer.Option(help="source name in loaders.yml (default: all)")] = None,
    full_refresh: FullRefreshOpt = False,
    estimate: Annotated[
        bool, typer.Option("--estimate", help="print the rows each table would read, read nothing")
    ] = False,
    config: ConfigOpt = None,
    target: TargetOpt = None,
    as_json: JsonOpt = False,
    wait: WaitOpt = 0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """BigQuery tables of any project -> warehouse (Storage Read API, MERGE on keys, incremental by cursor)."""
    from loaders.bigquery_job import estimate_bigquery, load_bigquery

    configure_logging(debug, quiet)

    def sources(cfg: LoadersConfig) -> dict[str, Any]:
        if not cfg.bigquery:
            raise LoaderError("no bigquery sources in loaders.yml", hint="see docs/loaders.md, BigQuery tables")
        return _pick(cfg.bigquery, source, "bigquery source")

    if estimate:
        rows = _run(
            target,
            lambda wh, cfg: [
                e.as_dict() for n, s in sources(cfg).items() for e in estimate_bigquery(n, s, wh, full_refresh)
            ],
            config,
            wait,
        )
        _report("bigquery: rows to read", rows, as_json)
        return
    with ProgressBoard("rows read") as board:
        rows = _run(
            target,
            lambda wh, cfg: [
                r.as_dict()
                for n, s in sources(cfg).items()
                for r in load_bigquery(n, s, wh, full_refresh, progress=board.advance)
            ],
            config,
            wait,
        )
    _report("bigquery -> warehouse", rows, as_json)


# ---- end of bigquery


@app.command()
def files(
    stream: Annotated[Optional[str], typer.Option(help="stream name in loaders.yml (default: all)")] = None,
    config: ConfigOpt = None,
    target: TargetOpt = None,
    as_json: JsonOpt = False,
    wait: WaitOpt = 0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Event files -> bronze, each file once (a changed file replaces its rows)."""
    configure_logging(debug, quiet)
    with ProgressBoard("rows read") as board:
        rows = _run(
            target,
            lambda wh, cfg: [
                jobs.load_files(name, s, wh, board.advance).as_dict()
                for name, s in _pick(cfg.files, stream, "file stream").items()
            ],
            config,
            wait,
        )
    _report("files -> warehouse", rows, as_json)
    held = {str(r["source"]): int(r["held_back"]) + int(r["rejected"]) for r in rows}  # type: ignore[call-overload]
    if any(held.values()):
        if not as_json:
            for source, count in held.items():
                if count:
                    err_console.print(f"{source}: {count:,} line(s), file(s) or value(s) held back")
            err_console.print("see them with: python -m loaders quarantine")
        sys.exit(EXIT_HELD_BACK)  # as reverse_etl does for rejected rows


@app.command()
def quarantine(
    stream: Annotated[Optional[str], typer.Option(help="only this stream (default: all)")] = None,
    limit: Annotated[int, typer.Option(help="at most this many rows (0: all)", min=0)] = 100,
    config: ConfigOpt = None,
    target: TargetOpt = None,
    as_json: JsonOpt = False,
    wait: WaitOpt = 0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """What `files` held back: lines and files that could not be read, values that did not
    parse, with file, line, byte offset, reason and raw text."""
    configure_logging(debug, quiet)

    def work(wh: Warehouse, cfg: LoadersConfig) -> list[dict[str, Any]]:
        found = state.read_held_back(wh, stream)
        return found[:limit] if limit else found

    rows = _run(target, work, config, wait)
    if as_json:
        _report("", rows, as_json)
        return
    shown = [{**r, "raw_text": _short(r["raw_text"]), "held_at": None} for r in rows]
    print_table("held back", [{k: v for k, v in r.items() if k != "held_at"} for r in shown])


def _short(text: object, width: int = 80) -> object:
    return text if not isinstance(text, str) or len(text) <= width else text[: width - 1] + "…"


@app.command()
def export(
    name: Annotated[Optional[str], typer.Option("--name", help="export name in loaders.yml (default: all)")] = None,
    day: DateOpt = None,
    config: ConfigOpt = None,
    target: TargetOpt = None,
    as_json: JsonOpt = False,
    wait: WaitOpt = 0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Warehouse tables -> Snappy Parquet under {destination}/{YYYYMMDD}/{table}/ (selected columns)."""
    from loaders.export import export_tables

    configure_logging(debug, quiet)
    when = _day(day)
    rows = _run(
        target,
        lambda wh, cfg: [
            r.as_dict() for e in _pick(cfg.exports, name, "export").values() for r in export_tables(wh, e, when)
        ],
        config,
        wait,
    )
    _report(f"export {when:%Y%m%d}", rows, as_json)


@app.command("import-table")
def import_table(
    table: Annotated[str, typer.Option("--table", help="an exported table's name")],
    name: Annotated[str, typer.Option("--name", help="the export in loaders.yml it belongs to")],
    schema: Annotated[str, typer.Option("--schema", help="schema to import into")] = "serving",
    day: DateOpt = None,
    config: ConfigOpt = None,
    target: Annotated[str, typer.Option("--target", help="where to import: postgres (default), duckdb")] = "postgres",
    as_json: JsonOpt = False,
    wait: WaitOpt = 0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """An export's Parquet files -> a table, swapped in atomically (the file loader's catalog
    strategy: a re-import of the same files loads nothing)."""
    from loaders.export import table_folder

    configure_logging(debug, quiet)
    when = _day(day)

    def work(wh: Warehouse, cfg: LoadersConfig) -> list[dict[str, Any]]:
        export_cfg = _pick(cfg.exports, name, "export")[name]
        stream = FileStreamConfig(
            path=table_folder(export_cfg, when, table),
            format="parquet",
            strategy="catalog",
            as_text=False,
            target_schema=schema,
            table=table,
            storage_options=export_cfg.storage_options,
        )
        return [jobs.load_files(f"import:{name}:{table}", stream, wh).as_dict()]

    _report(f"import {table} ({when:%Y%m%d})", _run(target, work, config, wait), as_json)


def main() -> None:
    run_cli(app)
