"""``python -m reverse_etl``: push dbt marts into Postgres and Redis.

Exit status: 0 all syncs succeeded; 2 they ran but rejected rows (see reverse_etl.rejected_rows);
1 a sync failed or was already running.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from reverse_etl.engine import Endpoints, RunOptions, SyncResult, run_syncs
from reverse_etl.spec import load_specs, select
from roundtrip.core.cli import DebugOpt, JsonOpt, configure_logging, console, err_console, print_table, run_cli
from roundtrip.core.settings import load_settings

app = typer.Typer(help="Reverse ETL: syncs declared as dbt exposures.", no_args_is_help=True)
EXIT_FAILED, EXIT_REJECTED = 1, 2


def endpoints_from_env() -> Endpoints:
    settings = load_settings()
    return Endpoints(postgres_url=settings.secret("postgres_url"), redis_url=settings.secret("redis_url"))


@app.command("list")
def list_syncs(as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Syncs declared in dbt (target/manifest.json)."""
    configure_logging(debug)
    rows: list[dict[str, Any]] = [
        {
            "sync": s.name,
            "model": s.model,
            "destination": s.destination,
            "mode": s.mode,
            "key": ",".join(s.settings.primary_key),
            "then refresh": ",".join(m.name for m in s.refresh),
        }
        for s in load_specs()
    ]
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        print_table("syncs", rows)


@app.command()
def run(
    sync: Annotated[str, typer.Option("--sync", help="sync name, or 'all'")] = "all",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan; write nothing")] = False,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run one sync or all of them (each under its own lock, retried on transient errors)."""
    configure_logging(debug)
    endpoints = endpoints_from_env()
    options = RunOptions(dry_run=dry_run)
    results = run_syncs(select(load_specs(), sync), endpoints, options)
    if as_json:
        for r in results:
            print(json.dumps(r.as_dict() | _details(r), default=str))
    else:
        _print_results(results, dry_run)
    if any(not r.ok for r in results):
        sys.exit(EXIT_FAILED)
    if any(r.counts.rejected for r in results):
        sys.exit(EXIT_REJECTED)  # the runs finished, but some rows were rejected


def _details(result: SyncResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if result.status == "dry_run":
        out["changes"], out["deletions"] = result.changes, result.deletions
    if result.rejections:
        out["rejections"] = result.rejections
    return out


def _print_results(results: list[SyncResult], dry_run: bool) -> None:
    title = "reverse syncs: plan (dry run, nothing written)" if dry_run else "reverse syncs"
    print_table(title, [{k: v for k, v in r.as_dict().items() if k != "error"} for r in results])
    for r in results:
        if r.error:
            err_console.print(f"[bold red]{r.status}:[/] {r.error}")
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
                f"(where run_id = {r.run_id})"
            )


@app.command()
def status(
    sync: Annotated[str | None, typer.Option("--sync", help="history of one sync (default: last run of each)")] = None,
    limit: Annotated[int, typer.Option(help="runs shown with --sync")] = 10,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run history from reverse_etl.runs: the last run of every sync, or the last runs of one."""
    from reverse_etl.runs import recent_runs

    configure_logging(debug)
    url = endpoints_from_env().postgres_url
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
