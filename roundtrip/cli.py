"""``roundtrip``: the one command line of the project.

    roundtrip demo | generate | services          the whole circle on a laptop, its parts
    roundtrip load sqlite | sql | files | ...     loaders (also ``python -m loaders``)
    roundtrip sync list | run | status            reverse syncs (also ``python -m reverse_etl``)
    roundtrip spark run | auto | ...              the medallion on Spark (also ``python -m spark_jobs``)
    roundtrip dbt <dbt arguments>                 dbt with this project's profiles and settings
    roundtrip bench [--size 1m --only ...]        benchmarks (``python -m benchmarks``)
    roundtrip settings [--markdown]               every setting, resolved (secrets masked)

This module is the top of the package graph: it may import every package, none imports it.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import typer

from loaders.cli import app as loaders_app
from reverse_etl.cli import app as reverse_etl_app
from roundtrip.core.cli import (
    DebugOpt,
    JsonOpt,
    ProgressBoard,
    QuietOpt,
    configure_logging,
    console,
    err_console,
    print_table,
    run_cli,
)
from roundtrip.core.settings import load_settings
from spark_jobs.cli import app as spark_app

app = typer.Typer(
    help="roundtrip: apps -> warehouse -> dbt -> back into apps.", no_args_is_help=True, add_completion=False
)
app.add_typer(loaders_app, name="load", help="Load app data into the warehouse; export warehouse tables as Parquet.")
app.add_typer(reverse_etl_app, name="sync", help="Reverse syncs declared as dbt exposures: list, run, status.")
app.add_typer(spark_app, name="spark", help="The medallion pipeline on Apache Spark, and the auto engine choice.")

Seed = Annotated[int, typer.Option(help="random seed: same seed and sizes, same data")]
Users = Annotated[int, typer.Option(help="app users", min=1)]
Items = Annotated[int, typer.Option(help="catalog items", min=1)]
Orders = Annotated[int, typer.Option(help="order-line events", min=0)]
Clicks = Annotated[int, typer.Option(help="click-stream events (about)", min=0)]
Days = Annotated[int, typer.Option(help="days of events, ending on --end-date", min=1)]
EndDate = Annotated[str, typer.Option(help="last day of events (YYYY-MM-DD)")]
Format = Annotated[str, typer.Option("--format", help="event files: jsonl, csv or parquet")]
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _config(seed: int, users: int, items: int, orders: int, clicks: int, days: int, end_date: str):  # type: ignore[no-untyped-def]
    from roundtrip.dev.sample_data import SampleConfig

    try:
        end = date.fromisoformat(end_date)
    except ValueError:
        raise typer.BadParameter(f"{end_date!r} is not a date (YYYY-MM-DD)", param_hint="--end-date") from None
    return SampleConfig(seed=seed, users=users, items=items, orders=orders, clicks=clicks, days=days, end_date=end)


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
    target: Annotated[
        Literal["duckdb", "postgres", "bigquery"],
        typer.Option("--target", help="the warehouse: duckdb (embedded), postgres, or bigquery (the emulator)"),
    ] = "duckdb",
    engine: Annotated[
        Literal["dbt", "spark"],
        typer.Option(
            "--engine", help="the medallion: dbt (in the warehouse) or spark (ROUNDTRIP_SPARK_MASTER, local by default)"
        ),
    ] = "dbt",
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Generate, load, dbt build, reverse-sync and summarize, on throwaway servers."""
    from roundtrip.dev.demo import run_demo

    configure_logging(debug, quiet)
    started = time.perf_counter()
    report = run_demo(_config(seed, users, items, orders, clicks, days, end_date), fmt, target=target, engine=engine)
    if as_json:
        print(json.dumps(report.__dict__, default=str))
        return
    console.rule("summary")
    print_table("generated", [report.generated])
    from loaders.cli import LOAD_COUNTS

    if report.spark:
        print_table("the medallion on Spark (silver and gold, read by dbt)", report.spark)
    print_table("loaded into the warehouse", report.loaded, merge=LOAD_COUNTS, merged_name="what happened")
    where = {"duckdb": load_settings().duckdb_path, "postgres": "the Postgres warehouse"}.get(
        target, "the BigQuery emulator"
    )
    print_table(f"rows per layer ({where})", report.layers)
    from reverse_etl.cli import COUNT_NAMES

    shown = [
        {k: v for k, v in s.items() if k in ("sync", "mode", "status", "seconds", *COUNT_NAMES)} for s in report.syncs
    ]
    print_table("reverse syncs", shown, merge=COUNT_NAMES, merged_name="what happened")
    print_table("destinations now hold", report.destinations)
    if report.gaps:
        print_table("what the BigQuery emulator could not build (real BigQuery builds it)", report.gaps)
    print_table("seconds per stage", [report.seconds | {"total": round(time.perf_counter() - started, 2)}])
    console.print(f"report: {report.html} (one page: open it in a browser)", markup=False)


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
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Sample data only: SQLite users, the Postgres catalog (ROUNDTRIP_POSTGRES_URL), event files."""
    from roundtrip.dev.sample_data import generate

    configure_logging(debug, quiet)
    settings = load_settings()
    pg_url = settings.secret("postgres_url")
    if not pg_url:
        console.print("[yellow]ROUNDTRIP_POSTGRES_URL is not set: the catalog is not written to Postgres[/]")
    cfg = _config(seed, users, items, orders, clicks, days, end_date)
    with ProgressBoard("events") as board:
        report = generate(cfg, settings.app_db, settings.landing_dir, pg_url, fmt, progress=board.advance)
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


class _Stopped(Exception):
    """A stop signal (SIGTERM, SIGHUP) turned into an exception, so cleanup runs as for Ctrl-C."""


@app.command()
def services(debug: DebugOpt = False) -> None:
    """Start a throwaway Postgres and Redis and wait; Ctrl-C, SIGTERM or SIGHUP stops them and
    removes their folders. Prints their URLs."""
    import signal

    from roundtrip.dev.demo import service_environment
    from roundtrip.dev.services import postgres_server, redis_server

    configure_logging(debug)
    folder = load_settings().services_dir
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def stop(signum: int, _frame: object) -> None:
        for each in stops:  # a second signal must not cut the cleanup short
            signal.signal(each, signal.SIG_IGN)
        raise _Stopped("Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)

    for signum in stops:
        signal.signal(signum, stop)
    try:
        with postgres_server(folder) as pg, redis_server(folder) as rd:
            console.print("Servers are up. In another shell:")
            for key, value in service_environment(pg, rd).items():
                console.print(f"  export {key}='{value}'", markup=False)
            console.print("Ctrl-C (or SIGTERM) stops them.")
            while True:
                time.sleep(3600)
    except _Stopped as exc:
        reason = str(exc)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
    left = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    console.print(
        f"stopped on {reason}: servers stopped, their folders under {folder} removed"
        + (f" (left there by others: {', '.join(left)})" if left else ""),
        markup=False,
        soft_wrap=True,
    )


@app.command("dbt", context_settings=PASSTHROUGH)
def dbt_cmd(ctx: typer.Context) -> None:
    """dbt with this project's profiles and derived settings: `roundtrip dbt build --target postgres`.

    Every argument goes to dbt as it is. The Postgres warehouse's connection comes from
    ROUNDTRIP_WAREHOUSE_URL (or ROUNDTRIP_POSTGRES_URL); a target other than duckdb writes its
    artifacts to target/<target>/ unless you pass --target-path.

    `roundtrip dbt manifest [--target T] [--force] [--json]` (not a dbt command): the manifest of
    a target, parsed only when the project's files, its environment or the target changed since
    the manifest on disk was written; prints which manifest it is and why."""
    import subprocess
    from pathlib import Path

    from roundtrip.core.dbt import dbt_command, dbt_environment, fingerprint_after, flag_value
    from roundtrip.core.paths import PROJECT_ROOT

    args = list(ctx.args)
    # like dbt itself: the project in the current folder (a copy, a checkout of another branch),
    # else this installation's own
    here = Path.cwd()
    project = here if (here / "dbt_project.yml").exists() else PROJECT_ROOT
    if args[:1] == ["manifest"]:
        _manifest(args[1:], project)
        return
    target = flag_value(args, "--target") or load_settings().target
    if target != "duckdb" and "--target-path" not in args and args[:1] not in (["clean"], ["deps"], ["debug"]):
        args += ["--target-path", str(load_settings().dbt_target_dir(target))]
    if target == "bigquery" and args[:1] in (["build"], ["run"], ["test"]):
        args += _bigquery_emulator_args()
    command = dbt_command(args, project_dir=project)
    environment = dbt_environment()
    with fingerprint_after(args, environment, project, target, None) as done:
        returncode = subprocess.run(command, cwd=project, env=environment).returncode
        done(returncode)
    sys.exit(returncode)


def _bigquery_emulator_args() -> list[str]:
    """On the BigQuery emulator (ROUNDTRIP_BQ_API_ENDPOINT set), leave out what it cannot build,
    saying what and why; real BigQuery builds everything."""
    from roundtrip.core.bigquery import BigQueryConnection
    from roundtrip.dev.bigquery_emulator import DBT_GAPS, dbt_args_on_emulator

    if not BigQueryConnection.from_settings(load_settings()).emulated:
        return []
    rows = [{"left out": selector, "why": reason} for selector, reason in DBT_GAPS]
    print_table("on the BigQuery emulator (ROUNDTRIP_BQ_API_ENDPOINT), dbt leaves out", rows)
    return dbt_args_on_emulator()


def _manifest(args: list[str], project: Path) -> None:
    """`roundtrip dbt manifest`: see ``roundtrip.core.dbt.ensure_manifest``."""
    from roundtrip.core.dbt import ensure_manifest, flag_value

    unknown = [a for a in args if a.startswith("-") and a.split("=")[0] not in ("--target", "--force", "--json")]
    if unknown:
        raise typer.BadParameter(
            f"unknown option {unknown[0]} (roundtrip dbt manifest [--target T] [--force] [--json])"
        )
    configure_logging()
    choice = ensure_manifest(flag_value(args, "--target"), project_dir=project, force="--force" in args)
    if "--json" in args:
        print(json.dumps(choice.as_dict()))
    else:
        err_console.print(choice.describe(), markup=False, highlight=False, soft_wrap=True)


@app.command("bench", context_settings=PASSTHROUGH)
def bench_cmd(ctx: typer.Context) -> None:
    """Benchmarks against baselines run side by side (`roundtrip bench --size 1m --only postgres_sync`)."""
    from benchmarks.cli import main as bench_main

    bench_main(list(ctx.args))


@app.command("settings")
def settings_cmd(
    markdown: Annotated[bool, typer.Option("--markdown", help="the README's configuration table")] = False,
    update_readme: Annotated[
        bool, typer.Option("--update-readme", help="write that table into README.md between its markers")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every ROUNDTRIP_* setting with its resolved value (secrets masked) and what it is for."""
    from roundtrip.core.settings import env_name, markdown_table, settings_table

    if markdown:
        print(markdown_table())
        return
    if update_readme:
        from roundtrip.core.paths import PROJECT_ROOT

        readme = PROJECT_ROOT / "README.md"
        start, end = "<!-- settings:start -->", "<!-- settings:end -->"
        text = readme.read_text()
        head, rest = text.split(start, 1)
        readme.write_text(f"{head}{start}\n{markdown_table()}\n{end}{rest.split(end, 1)[1]}")
        console.print(f"updated the configuration table of {readme}")
        return
    from pydantic import SecretStr

    from roundtrip.core.redact import MASK, redact

    resolved = load_settings()
    values = {}
    for name in type(resolved).model_fields:
        value = getattr(resolved, name)
        if isinstance(value, SecretStr):  # a URL keeps its host and user, a token nothing
            value = redact(value.get_secret_value()) if "://" in value.get_secret_value() else MASK
        values[env_name(name)] = value
    rows = [
        {"variable": r["variable"], "value": values[r["variable"]], "used for": r["used for"]} for r in settings_table()
    ]
    if as_json:
        for row in rows:
            print(json.dumps(row, default=str))
    else:
        print_table("settings", rows)


@app.command("install-extensions")
def install_extensions_cmd(debug: DebugOpt = False) -> None:
    """Install DuckDB's postgres and sqlite extensions from their PyPI packages (offline)."""
    from roundtrip.core.duckdb_extensions import install_extensions

    configure_logging(debug)
    folder = install_extensions()
    console.print(f"DuckDB extensions installed in {folder}")


def main() -> None:
    run_cli(app)
