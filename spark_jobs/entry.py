"""The command line of a Spark job, shared by ``python -m spark_jobs`` and by each job file run
alone (``spark-submit spark_jobs/bronze_to_silver.py --date ...``).

It imports no job module: a job file passes its own ``run``, the multi-command CLI passes a
loader that imports the job when the command runs. So under ``spark-submit`` the job file is
loaded once (as ``__main__``), and nothing imports in a circle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Literal, Optional

import typer

from roundtrip.core.cli import DebugOpt, JsonOpt, QuietOpt, configure_logging, print_table, run_cli
from spark_jobs import config

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

RunJob = Callable[["SparkSession", config.JobConfig], list[dict[str, object]]]

DateOpt = Annotated[Optional[str], typer.Option("--date", help="one event_date (YYYY-MM-DD)")]
StartOpt = Annotated[Optional[str], typer.Option("--start", help="first event_date of a backfill")]
EndOpt = Annotated[Optional[str], typer.Option("--end", help="last event_date of a backfill (inclusive)")]
LandingOpt = Annotated[
    Optional[str], typer.Option("--landing", help="bronze files (default: ROUNDTRIP_LANDING_PATH, data/landing)")
]
OutputOpt = Annotated[
    Optional[str],
    typer.Option("--output", help="silver/ and gold/ tables (default: ROUNDTRIP_SPARK_OUTPUT, data/spark)"),
]
FormatOpt = Annotated[
    Optional[Literal["jsonl", "csv", "parquet"]],
    typer.Option("--format", help="bronze files (default: ROUNDTRIP_LANDING_FORMAT, else detected from the files)"),
]
CatalogOpt = Annotated[
    Optional[str],
    typer.Option(
        "--catalog-parquet",
        help="read the item catalog from this Parquet copy instead of Postgres (ROUNDTRIP_CATALOG_URL, over JDBC)",
    ),
]


def job_config(
    day: str | None,
    start: str | None,
    end: str | None,
    landing: str | None,
    output: str | None,
    fmt: str | None,
    catalog: str | None,
) -> config.JobConfig:
    window = config.DateWindow.from_options(day, start, end)
    source = config.CatalogSource(parquet_path=catalog) if catalog else None
    return config.resolve(window, landing=landing, output=output, fmt=fmt, catalog=source)


def report(title: str, rows: list[dict[str, object]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row, default=str))
    else:
        print_table(title, rows)


def session() -> SparkSession:
    from spark_jobs.session import build_session

    return build_session()


def bronze_job(title: str, load_run: Callable[[], RunJob]) -> Callable[..., None]:
    """A command for a job that reads bronze files (``--landing``, ``--format``)."""

    def command(
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
        configure_logging(debug, quiet)
        cfg = job_config(day, start, end, landing, output, fmt, catalog_parquet)
        report(title, load_run()(session(), cfg), as_json)

    return command


def silver_job(title: str, load_run: Callable[[], RunJob]) -> Callable[..., None]:
    """A command for a job that reads the silver tables."""

    def command(
        day: DateOpt = None,
        start: StartOpt = None,
        end: EndOpt = None,
        output: OutputOpt = None,
        catalog_parquet: CatalogOpt = None,
        as_json: JsonOpt = False,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        configure_logging(debug, quiet)
        cfg = job_config(day, start, end, None, output, "jsonl", catalog_parquet)
        report(title, load_run()(session(), cfg), as_json)

    return command


def run_alone(command: Callable[..., None], help_text: str, argv: list[str] | None = None) -> None:
    """Run one job command as a program of its own (the job file's ``main``)."""
    app = typer.Typer(add_completion=False)
    app.command(help=help_text)(command)
    run_cli(app, argv)
