"""``python -m reverse_etl`` (``roundtrip sync``): push dbt marts into Postgres and Redis.

Exit status: 0 all syncs succeeded; 2 they ran but rejected rows (see reverse_etl.rejected_rows);
1 a sync failed, was blocked by a guard, was already running, or is declared wrongly.
Every run prints one result per sync (a table, or one JSON object per line with ``--json``),
failures included.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Optional

import typer

from reverse_etl.engine import Endpoints, RunOptions, SyncResult, run_syncs
from reverse_etl.spec import InvalidSync, SyncSpec, load_syncs, select
from roundtrip.core.cli import (
    DebugOpt,
    JsonOpt,
    ProgressBoard,
    QuietOpt,
    TargetOpt,
    WaitOpt,
    configure_logging,
    console,
    err_console,
    print_table,
    run_cli,
)
from roundtrip.core.redact import redact
from roundtrip.core.settings import Settings, load_settings

app = typer.Typer(help="Reverse ETL: syncs declared as dbt exposures.", no_args_is_help=True)
EXIT_FAILED, EXIT_REJECTED = 1, 2


def endpoints_from(settings: Settings) -> Endpoints:
    return Endpoints(postgres_url=settings.secret("postgres_url"), redis_url=settings.secret("redis_url"))


def _declared(target: str | None) -> tuple[Settings, str, list[SyncSpec], list[InvalidSync]]:
    settings = load_settings()
    warehouse = target or settings.target
    specs, invalid = load_syncs(target=warehouse)
    return settings, warehouse, specs, invalid


@app.command("list")
def list_syncs(target: TargetOpt = None, as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Syncs declared in dbt (the manifest of the --target warehouse), and the invalid ones."""
    configure_logging(debug)
    _, _, specs, invalid = _declared(target)
    rows: list[dict[str, Any]] = [
        {
            "sync": s.name,
            "model": s.model,
            "destination": s.destination,
            "mode": s.mode,
            "key": ",".join(s.settings.primary_key),
            "then refresh": ",".join(m.name for m in s.refresh),
        }
        for s in specs
    ]
    rows += [{"sync": i.name, "model": "", "destination": "", "mode": "invalid", "error": i.reason} for i in invalid]
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        print_table("syncs", [{k: v for k, v in r.items() if k != "error"} for r in rows])
        for i in invalid:
            err_console.print(f"[bold red]invalid:[/] {i.name}: {redact(i.reason)}", markup=True, highlight=False)
    if invalid:
        sys.exit(EXIT_FAILED)


@app.command()
def run(
    sync: Annotated[str, typer.Option("--sync", help="sync name, or 'all'")] = "all",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan; write nothing")] = False,
    full_resync: Annotated[
        bool, typer.Option("--full-resync", help="send every record again, whatever the sync state says")
    ] = False,
    max_delete_pct: Annotated[
        Optional[float], typer.Option("--max-delete-pct", min=0, max=100, help="this run's delete guard (%)")
    ] = None,
    max_reject_pct: Annotated[
        Optional[float], typer.Option("--max-reject-pct", min=0, max=100, help="this run's reject guard (%)")
    ] = None,
    target: TargetOpt = None,
    wait: WaitOpt = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run one sync or all of them (each under its own lock, retried on transient errors)."""
    configure_logging(debug, quiet)
    settings, _, specs, invalid = _declared(target)
    chosen = select(specs, sync, invalid)
    with ProgressBoard("rows sent") as board:
        options = RunOptions(
            dry_run=dry_run,
            full_resync=full_resync,
            wait=wait,
            max_delete_pct=max_delete_pct,
            max_reject_pct=max_reject_pct,
            settings=settings,
            on_rows=lambda name, rows: board.advance(name, rows),
        )
        results = run_syncs(chosen, endpoints_from(settings), options)
    broken = invalid if sync == "all" else []
    if as_json:
        for r in results:
            print(json.dumps(r.as_dict() | _details(r), default=str))
        for i in broken:
            print(json.dumps({"sync": i.name, "status": "invalid", "error": redact(i.reason)}))
    else:
        _print_results(results, dry_run)
        for i in broken:
            err_console.print(f"[bold red]invalid:[/] {i.name}: {redact(i.reason)}", highlight=False)
    if broken or any(not r.ok for r in results):
        sys.exit(EXIT_FAILED)
    if any(r.counts.rejected for r in results):
        sys.exit(EXIT_REJECTED)  # the runs finished, but some rows were rejected


def _details(result: SyncResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if result.status == "dry_run":
        out["changes"], out["deletions"] = result.changes, result.deletions
    if result.rejections:
        out["rejections"] = result.rejections
    if result.hint:
        out["hint"] = result.hint
    return out


def _print_results(results: list[SyncResult], dry_run: bool) -> None:
    title = "reverse syncs: plan (dry run, nothing written)" if dry_run else "reverse syncs"
    print_table(title, [{k: v for k, v in r.as_dict().items() if k != "error"} for r in results])
    for r in results:
        if r.error:
            err_console.print(f"[bold red]{r.status}:[/] {_escaped(r.error)}")
            if r.hint:
                err_console.print(f"[dim]hint:[/] {_escaped(r.hint)}")
        for change in r.changes:
            row = json.dumps(change["row"], default=str, ensure_ascii=False)
            console.print(f"  {r.spec.name} would {change['action']} {change['key']}: {row}", markup=False)
        for key in r.deletions:
            console.print(f"  {r.spec.name} would delete {key}", markup=False)
        for rejection in r.rejections:
            console.print(f"  {r.spec.name} rejected {rejection['key']}: {rejection['reason']}", markup=False)
        if r.counts.rejected and r.run_id is not None:
            console.print(
                f"  {r.counts.rejected} rejected row(s) of {r.spec.name} are kept in reverse_etl.rejected_rows "
                f"(where run_id = {r.run_id})",
                markup=False,
            )


def _escaped(text: str) -> str:
    from rich.markup import escape

    return escape(redact(text))


@app.command()
def status(
    sync: Annotated[str | None, typer.Option("--sync", help="history of one sync (default: last run of each)")] = None,
    limit: Annotated[int, typer.Option(help="runs shown with --sync", min=1)] = 10,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run history from reverse_etl.runs: the last run of every sync, or the last runs of one."""
    from reverse_etl.runs import recent_runs

    configure_logging(debug)
    url = load_settings().secret("postgres_url")
    if not url:
        raise typer.BadParameter("set ROUNDTRIP_POSTGRES_URL: the run history lives there")
    rows = [r.as_dict() for r in recent_runs(url, sync, limit)]
    if as_json:
        for row in rows:
            print(json.dumps(row, default=str))
    else:
        print_table("reverse sync runs", rows)


def main() -> None:
    run_cli(app)
