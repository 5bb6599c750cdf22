"""``python -m spark_jobs`` (``roundtrip spark``): the medallion pipeline on Spark, and the
``auto`` engine choice. The job commands come from ``spark_jobs.entry``, which each job file
also uses when it runs alone under ``spark-submit``."""

from __future__ import annotations

import json
import time
from importlib import import_module
from typing import Annotated, Optional

import typer

from roundtrip.core.cli import DebugOpt, JsonOpt, QuietOpt, TargetOpt, configure_logging, console, run_cli
from roundtrip.core.settings import load_settings
from spark_jobs import config
from spark_jobs.entry import (
    CatalogOpt,
    DateOpt,
    EndOpt,
    FormatOpt,
    LandingOpt,
    OutputOpt,
    StartOpt,
    bronze_job,
    job_config,
    report,
    session,
    silver_job,
)

app = typer.Typer(help="bronze -> silver -> gold on Apache Spark (docs/spark.md).", no_args_is_help=True)


def _job(module: str):  # type: ignore[no-untyped-def]
    return lambda: import_module(f"spark_jobs.{module}").run


app.command(
    "bronze-to-silver",
    help="Bronze files -> silver orders_clean and clicks_clean (the window's event_date partitions).",
)(bronze_job("bronze -> silver", _job("bronze_to_silver")))
app.command(
    "silver-to-gold", help="Silver -> the gold tables (the window's event_date partitions; hourly patterns whole)."
)(silver_job("silver -> gold", _job("silver_to_gold")))


def _medallion():  # type: ignore[no-untyped-def]
    return lambda spark, cfg: import_module("spark_jobs.auto").run_spark(cfg, spark)


app.command("run", help="bronze-to-silver, then silver-to-gold, for the same dates.")(
    bronze_job("bronze -> silver -> gold", _medallion)
)


@app.command("publish")
def publish_cmd(
    output: OutputOpt = None,
    target: TargetOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Copy Spark's silver and gold tables into the Postgres warehouse (schemas spark_silver and
    spark_gold), where dbt reads them with medallion_engine spark. DuckDB and BigQuery need none."""
    from spark_jobs import publish
    from spark_jobs.errors import SparkJobError

    configure_logging(debug, quiet)
    chosen = target or load_settings().target
    if chosen != "postgres":
        raise SparkJobError(
            f"publish copies Spark's tables into a Postgres warehouse; {chosen} reads them in place "
            "(DuckDB: read_parquet; BigQuery: external tables made by dbt)"
        )
    cfg = config.JobConfig(landing="", output=config.resolve_output(output), catalog=config.CatalogSource())
    report("Spark's tables in the Postgres warehouse", publish.run(session(), cfg), as_json)


@app.command("auto")
def auto_cmd(
    threshold: Annotated[
        Optional[int],
        typer.Option(
            "--threshold",
            min=0,
            help="bronze rows above which Spark runs (default: ROUNDTRIP_SPARK_THRESHOLD_ROWS, 20,000,000)",
        ),
    ] = None,
    plan_only: Annotated[bool, typer.Option("--plan", help="print the estimate and the choice, run nothing")] = False,
    medallion_only: Annotated[
        bool,
        typer.Option(
            "--medallion-only", help="on Spark: stop after Spark's tables (no dimensions loaded, no dbt build)"
        ),
    ] = False,
    bigquery: Annotated[
        bool,
        typer.Option(
            "--bigquery",
            help="also count the BigQuery sources of loaders.yml (python -m loaders bigquery --estimate) "
            "and load them on the warehouse path",
        ),
    ] = False,
    target: TargetOpt = None,
    day: DateOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    landing: LandingOpt = None,
    output: OutputOpt = None,
    fmt: FormatOpt = None,
    catalog_parquet: CatalogOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Estimate the bronze rows. Above the threshold: the medallion on Spark, the dimensions
    through the loaders, then dbt build of everything downstream over Spark's tables; at or below
    it: the loaders and dbt build of the whole project. Then the syncs can run."""
    from spark_jobs import auto

    configure_logging(debug, quiet)
    started = time.perf_counter()
    window = config.DateWindow.from_options(day, start, end)
    bronze = config.resolve_landing(landing)
    fmt = config.resolve_format(bronze, fmt)
    estimates = auto.estimate_bronze(bronze, fmt)
    if bigquery:
        estimates += auto.estimate_bigquery_sources(target or load_settings().target)
    plan = auto.choose_engine(
        sum(e.rows for e in estimates), auto.threshold_from_settings() if threshold is None else threshold
    )
    report(f"bronze under {bronze} ({fmt})", auto.describe(estimates), as_json)
    if as_json:
        print(json.dumps(plan.__dict__))
    else:
        console.print(f"engine: [bold]{plan.engine}[/] ({plan.reason})")
    if plan_only:
        return
    target = target or load_settings().target
    if plan.engine == "spark":
        cfg = job_config(day, start, end, bronze, output, fmt, catalog_parquet)
        spark = session()
        rows = auto.run_spark(cfg, spark)
        if bigquery:
            console.print("note: Spark reads the bronze files; load the BigQuery sources with make load-bigquery")
        if not medallion_only:
            report("Spark's tables", rows, as_json)
            if target == "postgres":  # Postgres cannot read Parquet: a copy in the warehouse
                from spark_jobs import publish

                report("Spark's tables in the Postgres warehouse", publish.run(spark, cfg), as_json)
            spark.stop()  # its memory is the marts' now
            rows = auto.run_marts(target, cfg.output)
    else:
        if not window.is_full:
            console.print("note: the warehouse path rebuilds every date (dbt models are whole tables)")
        rows = auto.run_warehouse(target, fmt=fmt, bigquery=bigquery)
    report(f"{plan.engine}: done in {time.perf_counter() - started:.1f} s", rows, as_json)


def main(argv: list[str] | None = None) -> None:
    run_cli(app, argv)
