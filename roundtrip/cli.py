"""``python -m roundtrip``: the main job, the sample-data generator and local servers."""

from __future__ import annotations

import json
import time
from datetime import date
from typing import Annotated

import typer

from roundtrip import paths
from roundtrip.cli_support import configure_logging, console, print_table, run_cli
from roundtrip.sample_data import SampleConfig

app = typer.Typer(help="roundtrip: apps -> warehouse -> dbt -> back into apps.", no_args_is_help=True)
DebugOpt = Annotated[bool, typer.Option("--debug", help="tracebacks and debug logs")]
Seed = Annotated[int, typer.Option(help="random seed: same seed and sizes, same data")]
Users = Annotated[int, typer.Option(help="app users")]
Items = Annotated[int, typer.Option(help="catalog items")]
Orders = Annotated[int, typer.Option(help="order-line events")]
Clicks = Annotated[int, typer.Option(help="click-stream events (about)")]
Days = Annotated[int, typer.Option(help="days of events, ending on --end-date")]
EndDate = Annotated[str, typer.Option(help="last day of events (YYYY-MM-DD)")]
Format = Annotated[str, typer.Option("--format", help="event files: jsonl, csv or parquet")]


def _config(seed: int, users: int, items: int, orders: int, clicks: int, days: int, end_date: str) -> SampleConfig:
    return SampleConfig(
        seed=seed,
        users=users,
        items=items,
        orders=orders,
        clicks=clicks,
        days=days,
        end_date=date.fromisoformat(end_date),
    )


@app.command()
def demo(
    seed: Seed = 42,
    users: Users = 5_000,
    items: Items = 2_000,
    orders: Orders = 50_000,
    clicks: Clicks = 150_000,
    days: Days = 45,
    end_date: EndDate = "2026-11-20",
    fmt: Format = "jsonl",
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    debug: DebugOpt = False,
) -> None:
    """Generate, load, dbt build, reverse-sync and summarize, on throwaway servers."""
    from roundtrip.demo import run_demo

    configure_logging(debug)
    started = time.perf_counter()
    report = run_demo(_config(seed, users, items, orders, clicks, days, end_date), fmt)
    if as_json:
        print(json.dumps(report.__dict__, default=str))
        return
    console.rule("summary")
    print_table("generated", [report.generated])
    print_table("loaded into the warehouse", report.loaded)
    print_table(f"rows per layer ({paths.duckdb_path()})", report.layers)
    print_table("reverse syncs", report.syncs)
    print_table("destinations now hold", report.destinations)
    print_table("seconds per stage", [report.seconds | {"total": round(time.perf_counter() - started, 2)}])


@app.command("generate")
def generate_cmd(
    seed: Seed = 42,
    users: Users = 5_000,
    items: Items = 2_000,
    orders: Orders = 50_000,
    clicks: Clicks = 150_000,
    days: Days = 45,
    end_date: EndDate = "2026-11-20",
    fmt: Format = "jsonl",
    debug: DebugOpt = False,
) -> None:
    """Sample data only: SQLite users, the Postgres catalog (ROUNDTRIP_POSTGRES_URL), event files."""
    import os

    from roundtrip.sample_data import generate
    from roundtrip.services import POSTGRES_URL_ENV

    configure_logging(debug)
    pg_url = os.environ.get(POSTGRES_URL_ENV)
    if not pg_url:
        console.print(f"[yellow]{POSTGRES_URL_ENV} is not set: the catalog is not written to Postgres[/]")
    report = generate(
        _config(seed, users, items, orders, clicks, days, end_date),
        paths.app_sqlite_path(),
        paths.landing_dir(),
        pg_url,
        fmt,
    )
    print_table(
        "generated",
        [
            {
                "users": report.users,
                "items": report.items,
                "orders": report.orders,
                "clicks": report.clicks,
                "files": report.files,
                **{f"{k} s": round(v, 2) for k, v in report.seconds.items()},
            }
        ],
    )


@app.command()
def services(debug: DebugOpt = False) -> None:
    """Start a throwaway Postgres and Redis and wait (Ctrl-C stops them). Prints their URLs."""
    from roundtrip.demo import service_environment
    from roundtrip.services import postgres_server, redis_server

    configure_logging(debug)
    with postgres_server(paths.services_dir()) as pg, redis_server(paths.services_dir()) as rd:
        console.print("Servers are up. In another shell:")
        for key, value in service_environment(pg, rd).items():
            if "PASSWORD" not in key:
                console.print(f"  export {key}='{value}'")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopping")


@app.command("install-extensions")
def install_extensions_cmd(debug: DebugOpt = False) -> None:
    """Install DuckDB's postgres and sqlite extensions from their PyPI packages (offline)."""
    from roundtrip.duckdb_extensions import install_extensions

    configure_logging(debug)
    folder = install_extensions()
    console.print(f"DuckDB extensions installed in {folder}")


def main() -> None:
    run_cli(app)
