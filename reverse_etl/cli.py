"""``python -m reverse_etl``: push dbt marts into Postgres and Redis."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer

from reverse_etl.engine import Endpoints, run_sync
from reverse_etl.spec import load_specs, select
from roundtrip.cli_support import configure_logging, console, print_table, run_cli
from roundtrip.services import POSTGRES_URL_ENV, REDIS_URL_ENV

app = typer.Typer(help="Reverse ETL: syncs declared as dbt exposures.", no_args_is_help=True)
DebugOpt = Annotated[bool, typer.Option("--debug", help="tracebacks and debug logs")]


def endpoints_from_env() -> Endpoints:
    return Endpoints(postgres_url=os.environ.get(POSTGRES_URL_ENV), redis_url=os.environ.get(REDIS_URL_ENV))


@app.command("list")
def list_syncs(debug: DebugOpt = False) -> None:
    """Syncs declared in dbt (target/manifest.json)."""
    configure_logging(debug)
    print_table(
        "syncs",
        [
            {
                "sync": s.name,
                "model": s.model,
                "destination": s.settings.destination,
                "target": s.settings.target,
                "mode": s.settings.mode,
                "key": ",".join(s.settings.primary_key),
            }
            for s in load_specs()
        ],
    )


@app.command()
def run(
    sync: Annotated[str, typer.Option("--sync", help="sync name, or 'all'")] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object of counts per sync")] = False,
    debug: DebugOpt = False,
) -> None:
    """Run one sync or all of them."""
    configure_logging(debug)
    endpoints = endpoints_from_env()
    results = [run_sync(spec, endpoints) for spec in select(load_specs(), sync)]
    if as_json:
        for r in results:
            print(json.dumps(r.as_dict()))
    else:
        print_table("reverse syncs", [r.as_dict() for r in results])
        for r in results:
            for key, reason in r.counts.rejections:
                console.print(f"[yellow]rejected[/] {r.spec.name} {key}: {reason}")
    if any(r.counts.rejected for r in results):
        sys.exit(2)  # the run finished, but some rows were rejected


def main() -> None:
    run_cli(app)
