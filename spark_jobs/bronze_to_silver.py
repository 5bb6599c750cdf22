"""Bronze event files -> silver ``orders_clean`` and ``clicks_clean`` (docs/contract.md, "Silver").

One row per bronze record, nothing dropped: typed columns, ``event_ts`` in UTC, ``event_date``,
``is_duplicate``, ``validation_errors``, ``is_valid``; orders also get ``amount`` and the
catalog's ``item_title`` / ``category``.

Which input a run reads: every bronze file, whatever its landing ``dt=`` folder, because copies
of a record are recognised across all of bronze (a redelivery can land days after its original,
and the original decides which copy is the duplicate). What a run writes: the ``event_date``
partitions of its window, plus the undated partition (records whose ``event_ts`` is missing or
invalid, recomputed in full by every run). So ``--date D`` writes exactly the rows a full run
writes for D.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from roundtrip.core.cli import step
from roundtrip.core.contract import BRONZE_FIELDS
from spark_jobs import storage
from spark_jobs.config import DateWindow, JobConfig
from spark_jobs.expressions import join_codes, parse_decimal, parse_integer, parse_iso_timestamp

log = logging.getLogger(__name__)

# the bronze record fields (docs/contract.md), as the generator writes them
ORDER_FIELDS, CLICK_FIELDS = BRONZE_FIELDS["orders"], BRONZE_FIELDS["clicks"]
# each record's landing file, line and landing time, as dbt's silver has them (from the loader):
# the key of silver's rows and of the intermediate models that read them
SILVER_LINEAGE = ("source_file", "source_line", "loaded_at")
ORDERS_CLEAN = (
    "ingestion_id",
    "order_id",
    "user_id",
    "item_id",
    "session_id",
    "quantity",
    "unit_price",
    "currency",
    "event_ts",
    "event_date",
    "ingested_at",
    "amount",
    "item_title",
    "category",
    "is_duplicate",
    "validation_errors",
    "is_valid",
    *SILVER_LINEAGE,
)
CLICKS_CLEAN = (
    "ingestion_id",
    "event_id",
    "session_id",
    "user_id",
    "item_id",
    "event_type",
    "search_query",
    "event_ts",
    "event_date",
    "ingested_at",
    "is_duplicate",
    "validation_errors",
    "is_valid",
    *SILVER_LINEAGE,
)
EVENT_TYPES = ("search", "view", "click", "add_to_cart")
# contract: exact ties on ingested_at are broken by the record's fields in this order, NULLs last,
# then by its place in the landing files
ORDER_TIE_BREAK = (
    *("event_ts_raw", "order_id", "user_id", "item_id", "quantity", "unit_price", "session_id", "currency"),
    *("source_file", "source_line"),
)
CLICK_TIE_BREAK = (
    *("event_ts_raw", "event_id", "session_id", "user_id", "item_id", "event_type", "search_query"),
    *("source_file", "source_line"),
)
MAX_UNIT_PRICE = 10_000
TABLES = ("orders_clean", "clicks_clean")


@dataclass(frozen=True)
class Bronze:
    orders: DataFrame
    clicks: DataFrame
    items: DataFrame  # item_id, item_title, category


@dataclass(frozen=True)
class Silver:
    orders_clean: DataFrame
    clicks_clean: DataFrame


# ---------------------------------------------------------------- extract


def extract(spark: SparkSession, cfg: JobConfig) -> Bronze:
    return Bronze(
        orders=storage.read_bronze(spark, cfg.bronze_path("orders"), cfg.fmt, ORDER_FIELDS),
        clicks=storage.read_bronze(spark, cfg.bronze_path("clicks"), cfg.fmt, CLICK_FIELDS),
        items=storage.read_catalog(spark, cfg.catalog),
    )


# ---------------------------------------------------------------- transform (pure)


def transform(bronze: Bronze, window: DateWindow) -> Silver:
    return Silver(
        orders_clean=transform_orders(bronze.orders, bronze.items, window),
        clicks_clean=transform_clicks(bronze.clicks, window),
    )


def flag_duplicates(records: DataFrame, tie_break: Sequence[str]) -> DataFrame:
    """``is_duplicate``: among records sharing a non-NULL ``ingestion_id``, every one but the
    earliest ``ingested_at`` (exact ties: ``tie_break`` columns, NULLs last)."""
    # A NULL ingestion_id never groups records: each such record gets a window of its own
    # instead of all of them landing in one (skewed) window partition.
    alone = F.when(F.col("ingestion_id").isNull(), F.monotonically_increasing_id())
    order = [F.col(c).asc_nulls_last() for c in ("ingested_at", *tie_break)]
    delivery = F.row_number().over(Window.partitionBy("ingestion_id", "_alone").orderBy(*order))
    return (
        records.withColumn("_alone", alone)
        .withColumn("is_duplicate", F.col("ingestion_id").isNotNull() & (delivery > 1))
        .drop("_alone")
    )


def _finish(
    records: DataFrame, rules: list[tuple[str, Column]], columns: Sequence[str], window: DateWindow
) -> DataFrame:
    """validation_errors / is_valid, the contract's column order, the run's dates."""
    return (
        records.withColumn("validation_errors", join_codes(rules))
        .withColumn("is_valid", F.col("validation_errors").isNull())
        .select(*columns)
        # after the duplicate ranking, which needs every date
        .where(storage.in_window(window, keep_undated=True))
    )


def _lineage() -> list[Column]:
    """Bronze's ``_source_file``, ``_source_line``, ``_loaded_at`` under silver's names."""
    return [F.col(bronze).alias(silver) for bronze, silver in zip(storage.LINEAGE, SILVER_LINEAGE)]


def transform_orders(orders: DataFrame, items: DataFrame, window: DateWindow) -> DataFrame:
    c = F.col
    typed = orders.select(
        "ingestion_id",
        "order_id",
        parse_integer(c("user_id")).alias("user_id"),
        parse_integer(c("item_id")).alias("item_id"),
        "session_id",
        parse_integer(c("quantity"), "int").alias("quantity"),
        parse_decimal(c("unit_price"), "decimal(12, 2)").alias("unit_price"),
        "currency",
        c("event_ts").alias("event_ts_raw"),
        parse_iso_timestamp(c("event_ts")).alias("event_ts"),
        parse_iso_timestamp(c("ingested_at")).alias("ingested_at"),
        c(storage.MISSING_FIELDS).alias("missing_fields"),
        *_lineage(),
    )
    catalog = items.select("item_id", "item_title", "category", F.lit(True).alias("_in_catalog"))
    enriched = (
        flag_duplicates(typed, ORDER_TIE_BREAK)
        .join(catalog, on="item_id", how="left")
        .withColumn("event_date", c("event_ts").cast("date"))
        # decimal(18, 2): the type dbt-duckdb gives integer * decimal(12, 2)
        .withColumn("amount", (c("quantity").cast("decimal(10, 0)") * c("unit_price")).cast("decimal(18, 2)"))
    )
    rules = [
        ("missing_order_id", c("order_id").isNull()),
        ("missing_user_id", c("user_id").isNull()),
        ("missing_item_id", c("item_id").isNull()),
        ("invalid_event_ts", c("event_ts").isNull()),
        ("invalid_quantity", c("quantity").isNull() | (c("quantity") <= 0)),
        ("invalid_price", c("unit_price").isNull() | (c("unit_price") <= 0) | (c("unit_price") >= MAX_UNIT_PRICE)),
        ("unknown_item", c("item_id").isNotNull() & c("_in_catalog").isNull()),
        ("missing_fields", c("missing_fields").isNotNull()),
    ]
    return _finish(enriched, rules, ORDERS_CLEAN, window)


def transform_clicks(clicks: DataFrame, window: DateWindow) -> DataFrame:
    c = F.col
    typed = clicks.select(
        "ingestion_id",
        "event_id",
        "session_id",
        parse_integer(c("user_id")).alias("user_id"),
        parse_integer(c("item_id")).alias("item_id"),
        "event_type",
        c("query").alias("search_query"),
        c("event_ts").alias("event_ts_raw"),
        parse_iso_timestamp(c("event_ts")).alias("event_ts"),
        parse_iso_timestamp(c("ingested_at")).alias("ingested_at"),
        c(storage.MISSING_FIELDS).alias("missing_fields"),
        *_lineage(),
    )
    flagged = flag_duplicates(typed, CLICK_TIE_BREAK).withColumn("event_date", c("event_ts").cast("date"))
    is_search = c("event_type").isNotNull() & (c("event_type") == "search")
    rules = [
        ("missing_event_id", c("event_id").isNull()),
        ("missing_user_id", c("user_id").isNull()),
        ("missing_session_id", c("session_id").isNull()),
        ("invalid_event_type", c("event_type").isNull() | ~c("event_type").isin(*EVENT_TYPES)),
        ("invalid_event_ts", c("event_ts").isNull()),
        ("missing_item_id", c("item_id").isNull() & ~is_search),
        ("missing_fields", c("missing_fields").isNotNull()),
    ]
    return _finish(flagged, rules, CLICKS_CLEAN, window)


# ---------------------------------------------------------------- load


def load(silver: Silver, cfg: JobConfig) -> None:
    for table in TABLES:  # Spark computes a table when it writes it: each write is a stage
        with step(f"Spark: silver.{table}"):
            storage.write_partitions(getattr(silver, table), cfg.table_path("silver", table), cfg.window)


HELP = "Bronze files -> silver orders_clean and clicks_clean (the window's event_date partitions)."


def run(spark: SparkSession, cfg: JobConfig) -> list[dict[str, object]]:
    """extract -> transform -> load; returns what each table holds for the window afterwards."""
    started = time.perf_counter()
    log.info(
        "bronze -> silver for %s: bronze %s (%s), catalog %s", cfg.window, cfg.landing, cfg.fmt, cfg.catalog.describe()
    )
    load(transform(extract(spark, cfg), cfg.window), cfg)
    seconds = round(time.perf_counter() - started, 2)
    return [
        {
            "table": f"silver.{table}",
            "dates": str(cfg.window) if cfg.window.is_full else f"{cfg.window} + undated",
            "rows": storage.count_rows(spark, cfg.table_path("silver", table), cfg.window, keep_undated=True),
            "path": cfg.table_path("silver", table),
            "seconds": seconds,
        }
        for table in TABLES
    ]


def main(argv: list[str] | None = None) -> None:
    """``spark-submit spark_jobs/bronze_to_silver.py --date ...``: this job alone."""
    from spark_jobs.entry import bronze_job, run_alone

    run_alone(bronze_job("bronze -> silver", lambda: run), HELP, argv)


if __name__ == "__main__":
    main()
