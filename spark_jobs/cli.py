"""``python -m spark_jobs``: the medallion pipeline on Spark, and the ``auto`` engine choice."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated, Optional

import typer

from roundtrip.cli_support import configure_logging, console, print_table, run_cli
from spark_jobs import config

app = typer.Typer(help="bronze -> silver -> gold on Apache Spark (docs/spark.md).", no_args_is_help=True)

DateOpt = Annotated[Optional[str], typer.Option("--date", help="one event_date (YYYY-MM-DD)")]
StartOpt = Annotated[Optional[str], typer.Option("--start", help="first event_date of a backfill")]
EndOpt = Annotated[Optional[str], typer.Option("--end", help="last event_date of a backfill (inclusive)")]
LandingOpt = Annotated[
    Optional[str], typer.Option("--landing", help="bronze files (default: ROUNDTRIP_LANDING_PATH or data/landing)")
]
OutputOpt = Annotated[
    Optional[str],
    typer.Option("--output", help="silver/ and gold/ tables (default: ROUNDTRIP_SPARK_OUTPUT or data/spark)"),
]
FormatOpt = Annotated[str, typer.Option("--format", help="bronze files: jsonl, csv or parquet")]
CatalogOpt = Annotated[
    Optional[str],
    typer.Option(
        "--catalog-parquet",
        help="read the item catalog from this Parquet copy instead of Postgres (ROUNDTRIP_CATALOG_URL, over JDBC)",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the results as JSON lines")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="tracebacks and debug logs")]


def _config(
    day: str | None,
    start: str | None,
    end: str | None,
    landing: str | None,
    output: str | None,
    fmt: str,
    catalog: str | None,
) -> config.JobConfig:
    window = config.DateWindow.from_options(day, start, end)
    source = config.CatalogSource(parquet_path=catalog) if catalog else None
    return config.resolve(window, landing=landing, output=output, fmt=fmt, catalog=source)


def _report(title: str, rows: list[dict[str, object]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row, default=str))
    else:
        print_table(title, rows)


def _spark():  # type: ignore[no-untyped-def]
    from spark_jobs.session import build_session

    return build_session()


@app.command("bronze-to-silver")
def bronze_to_silver_cmd(
    day: DateOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    landing: LandingOpt = None,
    output: OutputOpt = None,
    fmt: FormatOpt = "jsonl",
    catalog_parquet: CatalogOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Bronze files -> silver orders_clean and clicks_clean (the window's event_date partitions)."""
    from spark_jobs import bronze_to_silver

    configure_logging(debug)
    cfg = _config(day, start, end, landing, output, fmt, catalog_parquet)
    _report("bronze -> silver", bronze_to_silver.run(_spark(), cfg), as_json)


@app.command("silver-to-gold")
def silver_to_gold_cmd(
    day: DateOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    output: OutputOpt = None,
    catalog_parquet: CatalogOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Silver -> the gold tables (the window's event_date partitions; hourly patterns whole)."""
    from spark_jobs import silver_to_gold

    configure_logging(debug)
    cfg = _config(day, start, end, None, output, "jsonl", catalog_parquet)
    _report("silver -> gold", silver_to_gold.run(_spark(), cfg), as_json)


@app.command("run")
def run_cmd(
    day: DateOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    landing: LandingOpt = None,
    output: OutputOpt = None,
    fmt: FormatOpt = "jsonl",
    catalog_parquet: CatalogOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """bronze-to-silver, then silver-to-gold, for the same dates."""
    from spark_jobs.auto import run_spark

    configure_logging(debug)
    cfg = _config(day, start, end, landing, output, fmt, catalog_parquet)
    _report("bronze -> silver -> gold", run_spark(cfg), as_json)


@app.command("auto")
def auto_cmd(
    threshold: Annotated[
        Optional[int],
        typer.Option(
            "--threshold",
            help="bronze rows above which Spark runs (default: ROUNDTRIP_SPARK_THRESHOLD_ROWS or 20,000,000)",
        ),
    ] = None,
    plan_only: Annotated[bool, typer.Option("--plan", help="print the estimate and the choice, run nothing")] = False,
    target: Annotated[
        Optional[str], typer.Option("--target", help="warehouse for the dbt path (default: ROUNDTRIP_TARGET or duckdb)")
    ] = None,
    day: DateOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    landing: LandingOpt = None,
    output: OutputOpt = None,
    fmt: FormatOpt = "jsonl",
    catalog_parquet: CatalogOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Estimate the bronze rows; above the threshold run the medallion on Spark, else loaders + dbt build."""
    from spark_jobs import auto

    configure_logging(debug)
    started = time.perf_counter()
    window = config.DateWindow.from_options(day, start, end)
    bronze = config.resolve_landing(landing)
    estimates = auto.estimate_bronze(bronze, fmt)  # type: ignore[arg-type]
    plan = auto.choose_engine(
        sum(e.rows for e in estimates), auto.threshold_from_env() if threshold is None else threshold
    )
    _report(f"bronze under {bronze}", auto.describe(estimates), as_json)
    if as_json:
        print(json.dumps(plan.__dict__))
    else:
        console.print(f"engine: [bold]{plan.engine}[/] ({plan.reason})")
    if plan_only:
        return
    if plan.engine == "spark":
        cfg = _config(day, start, end, bronze, output, fmt, catalog_parquet)
        rows = auto.run_spark(cfg)
    else:
        if not window.is_full:
            console.print("note: the warehouse path rebuilds every date (dbt models are whole tables)")
        rows = auto.run_warehouse(target or os.environ.get("ROUNDTRIP_TARGET", "duckdb"))
    _report(f"{plan.engine}: done in {time.perf_counter() - started:.1f} s", rows, as_json)


def main(argv: list[str] | None = None) -> None:
    run_cli(app, argv)


def main_for(command: str) -> None:
    """Entry point of one job module (``spark-submit spark_jobs/bronze_to_silver.py --date ...``)."""
    main([command, *sys.argv[1:]])
