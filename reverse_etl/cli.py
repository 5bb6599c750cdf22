"""``python -m reverse_etl`` (``roundtrip sync``): push dbt marts into Postgres and Redis.

Exit status: 0 all syncs succeeded; 2 they ran but rejected rows (see reverse_etl.rejected_rows);
1 a sync failed, was blocked by a guard, was already running, or is declared wrongly.
Every run prints one result per sync (a table, or one JSON object per line with ``--json``),
failures included.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from reverse_etl.connections import Connections
from reverse_etl.connections import kinds as connection_kinds
from reverse_etl.counts import FIELDS
from reverse_etl.engine import RunOptions, SyncResult, run_syncs
from reverse_etl.errors import SyncError
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


def connections_from(settings: Settings) -> Connections:
    return Connections.from_settings(settings)


def _declared(target: str | None) -> tuple[Settings, str, list[SyncSpec], list[InvalidSync]]:
    settings = load_settings()
    warehouse = target or settings.target
    specs, invalid = load_syncs(target=warehouse, kinds=connection_kinds(settings))
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
    adopt: Annotated[
        bool,
        typer.Option("--adopt", help="a sync with no state takes over the records its destination already holds"),
    ] = False,
    verify_sample: Annotated[
        Optional[int],
        typer.Option("--verify-sample", min=0, help="records read back and compared this run (default: the sync's)"),
    ] = None,
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
    settings, warehouse, specs, invalid = _declared(target)
    chosen = select(specs, sync, invalid)
    _check_warehouse(settings, warehouse, chosen)
    connections = connections_from(settings)
    _preflight(connections, chosen, as_json)
    with ProgressBoard("rows sent") as board:
        options = RunOptions(
            dry_run=dry_run,
            full_resync=full_resync,
            adopt=adopt,
            verify_sample=verify_sample,
            wait=wait,
            max_delete_pct=max_delete_pct,
            max_reject_pct=max_reject_pct,
            settings=settings,
            on_rows=lambda name, rows: board.advance(name, rows),
        )
        results = run_syncs(chosen, connections, options)
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


def _preflight(connections: Connections, chosen: list[SyncSpec], as_json: bool) -> None:
    """Every server the chosen syncs need, reached once before any of them runs: a server that
    is down fails the invocation in one line (with --json, one failed line per sync)."""
    try:
        connections.preflight({s.settings.destination for s in chosen})
    except SyncError as exc:
        if as_json:
            for spec in chosen:
                line = {"sync": spec.name, "mode": spec.mode, "status": "failed", "error": redact(str(exc))}
                print(json.dumps(line | ({"hint": exc.hint} if exc.hint else {})))
            err_console.print(f"[bold red]error:[/] {redact(str(exc))}", markup=True, highlight=False, soft_wrap=True)
            sys.exit(EXIT_FAILED)
        raise


def _check_warehouse(settings: Settings, warehouse: str, chosen: list[SyncSpec]) -> None:
    from reverse_etl.sources import warehouse_file

    if warehouse == "duckdb" and chosen and not warehouse_file(settings).exists():
        # one clear line, rather than the same failure once per sync and as many failed runs
        raise SyncError(
            f"warehouse {warehouse_file(settings)} not found: nothing to sync yet",
            hint="build it first: make demo, or the loaders and `make dbt-build`",
        )


@app.command()
def verify(
    sync: Annotated[str, typer.Option("--sync", help="sync name, or 'all'")] = "all",
    repair: Annotated[
        bool, typer.Option("--repair", help="write again what is missing or differs (and delete what mirror deleted)")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, help="differences shown per sync")] = 10,
    target: TargetOpt = None,
    wait: WaitOpt = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Read each sync's destination back and compare it with the mart: rows (keys) missing,
    differing by value, or extra; --repair sends exactly those again. Exit 1 when any differ."""
    from dataclasses import replace

    from reverse_etl.verify import verify_syncs

    configure_logging(debug, quiet)
    settings, warehouse, specs, invalid = _declared(target)
    chosen = select(specs, sync, invalid)
    _check_warehouse(settings, warehouse, chosen)
    connections = connections_from(settings)
    _preflight(connections, chosen, as_json)
    options = RunOptions(dry_run=True, wait=wait, settings=settings)
    reports = verify_syncs(chosen, connections, options, limit)
    repaired: list[SyncResult] = []
    if repair and any(r.problems for r in reports):
        todo = [s for s, r in zip(chosen, reports, strict=True) if r.problems]
        repaired = run_syncs(todo, connections, replace(options, dry_run=False, verify_all=True))
        reports = verify_syncs(chosen, connections, options, limit)
    if as_json:
        for report in reports:
            print(json.dumps(report.as_dict(), default=str))
        for r in repaired:
            print(json.dumps({"repair": True} | r.as_dict(), default=str))
    else:
        rows = [{k: v for k, v in r.as_dict().items() if k != "sample"} for r in reports]
        print_table("verify: the destination read back against the mart", rows)
        for report in reports:
            for item in report.sample:
                line = f"  {report.sync}: {item['problem']} {item['key']}"
                if item.get("columns"):
                    line += f" (columns {', '.join(item['columns'])})"
                console.print(line, markup=False)
        if repaired:
            _print_results(repaired, dry_run=False)
    if any(r.problems for r in reports) or any(not r.ok for r in repaired):
        sys.exit(EXIT_FAILED)


def _details(result: SyncResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if result.status == "dry_run":
        out["changes"], out["deletions"] = result.changes, result.deletions
        if result.fields:
            out["fields"] = result.fields
        if result.schema_change:
            out["schema_change"] = result.schema_change
    if result.rejections:
        out["rejections"] = result.rejections
    if result.hint:
        out["hint"] = result.hint
    return out


def result_rows(results: list[SyncResult]) -> list[dict[str, Any]]:
    """What a person reads of each result (the JSON lines carry everything)."""
    return [
        {"sync": r.spec.name, "mode": r.spec.mode, "status": r.status, "seconds": round(r.seconds, 2)}
        | r.counts.as_dict()
        for r in results
    ]


COUNT_NAMES = FIELDS


def _print_results(results: list[SyncResult], dry_run: bool) -> None:
    title = "reverse syncs: plan (dry run, nothing written)" if dry_run else "reverse syncs"
    print_table(title, result_rows(results), merge=COUNT_NAMES, merged_name="what happened")
    for r in results:
        if r.refreshed:
            console.print(f"  {r.spec.name}: refreshed {', '.join(r.refreshed)}", markup=False)
        for repair in r.repairs:
            console.print(f"  {r.spec.name}: {repair}", markup=False)
        if r.error:
            err_console.print(f"[bold red]{r.status}:[/] {_escaped(r.error)}")
            if r.hint:
                err_console.print(f"[dim]hint:[/] {_escaped(r.hint)}")
        if r.schema_change:
            console.print(f"  {r.spec.name} would follow a schema change: {r.schema_change}", markup=False)
        for change in r.changes:
            row = json.dumps(change["row"], default=str, ensure_ascii=False)
            console.print(f"  {r.spec.name} would {change['action']} {change['key']}: {row}", markup=False)
        if r.fields:
            counted = ", ".join(f"{c} {n:,}" for c, n in r.fields["columns"].items())
            console.print(f"  {r.spec.name} updates change, per column: {counted or 'nothing'}", markup=False)
            for item in r.fields["sample"]:
                moves = "; ".join(
                    f"{c}: {json.dumps(v['old'], default=str, ensure_ascii=False)} -> "
                    f"{json.dumps(v['new'], default=str, ensure_ascii=False)}"
                    for c, v in item["changes"].items()
                )
                console.print(f"    {item['key']}: {moves}", markup=False)
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
def plan(
    out: Annotated[Path, typer.Option("--out", help="where to write the plan (JSON)")],
    sync: Annotated[str, typer.Option("--sync", help="sync name, or 'all'")] = "all",
    target: TargetOpt = None,
    wait: WaitOpt = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """A dry run of the chosen syncs written to a file, with a seal of what it saw: review it,
    then `roundtrip sync apply PLAN`. Writes nothing anywhere else."""
    from reverse_etl.plan import make_plan, write_plan

    configure_logging(debug, quiet)
    settings, warehouse, specs, invalid = _declared(target)
    chosen = select(specs, sync, invalid)
    _check_warehouse(settings, warehouse, chosen)
    connections = connections_from(settings)
    _preflight(connections, chosen, as_json)
    made, results = make_plan(chosen, connections, RunOptions(wait=wait, settings=settings), warehouse)
    write_plan(made, out)
    if as_json:
        for r in results:
            print(json.dumps(r.as_dict() | _details(r), default=str))
    else:
        _print_results(results, dry_run=True)
        console.print(f"plan written to {out}; apply it with: roundtrip sync apply {out}", markup=False)
    if any(not r.ok for r in results):
        sys.exit(EXIT_FAILED)


@app.command()
def apply(
    path: Annotated[Path, typer.Argument(help="a plan written by `roundtrip sync plan --out`")],
    target: TargetOpt = None,
    wait: WaitOpt = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run a plan's syncs, each only if its mart, state and destination are as the plan saw
    them (a stale plan is refused: status `stale`, nothing written)."""
    from reverse_etl.plan import apply_plan, read_plan

    configure_logging(debug, quiet)
    planned = read_plan(path)
    settings, _, specs, _ = _declared(target or planned.get("target"))
    connections = connections_from(settings)
    names = {entry["sync"] for entry in planned["syncs"]}
    _preflight(connections, [s for s in specs if s.name in names], as_json)
    with ProgressBoard("rows sent") as board:
        options = RunOptions(wait=wait, settings=settings, on_rows=lambda name, rows: board.advance(name, rows))
        results = apply_plan(planned, specs, connections, options)
    if as_json:
        for r in results:
            print(json.dumps(r.as_dict() | _details(r), default=str))
    else:
        _print_results(results, dry_run=False)
    if any(not r.ok for r in results):
        sys.exit(EXIT_FAILED)
    if any(r.counts.rejected for r in results):
        sys.exit(EXIT_REJECTED)


@app.command()
def connections(as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """The named connections (profiles/connections.yml), passwords masked, each reached and
    logged in to; which one keeps the state. Exit 1 when any cannot be used."""
    configure_logging(debug)
    settings = load_settings()
    declared = connections_from(settings)
    used = {s.settings.destination for s in _declared_quietly(settings)}
    rows = []
    for name, connection in sorted(declared.by_name.items()):
        ok, what, seconds = declared.check(name)
        rows.append(
            {
                "connection": name,
                "type": connection.kind,
                "url": connection.safe_url,
                "role": ", ".join(
                    r for r, yes in (("state", name == declared.state), ("destination", name in used)) if yes
                )
                or "unused",
                "status": "ok" if ok else "failed",
                "server": what,
                "seconds": round(seconds, 3),
            }
        )
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        print_table(f"connections ({declared.source})", rows)
    if not rows or any(r["status"] != "ok" for r in rows):
        sys.exit(EXIT_FAILED)


def _declared_quietly(settings: Settings) -> list[SyncSpec]:
    """The syncs, when a manifest is there (``connections`` works without one)."""
    try:
        specs, _ = load_syncs(target=settings.target, kinds=connection_kinds(settings))
    except SyncError:
        return []
    return specs


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
    connections = connections_from(load_settings())
    connections.preflight(set())
    rows = [r.as_dict() for r in recent_runs(connections.state_url, sync, limit)]
    if as_json:
        for row in rows:
            print(json.dumps(row, default=str))
    else:
        shown = [{k: v for k, v in r.items() if k != "attempts"} for r in rows]
        print_table("reverse sync runs", shown, merge=COUNT_NAMES, merged_name="what happened")


def main() -> None:
    run_cli(app)
