"""Silver -> gold: ``daily_gmv_metrics``, ``item_performance``, ``user_funnel_metrics`` and
``hourly_order_patterns`` (docs/contract.md, "Gold"). Only valid, non-duplicate rows count.

Gold for a date can depend on other dates (``new_users`` looks at every earlier order,
``gmv_growth_pct`` at the day before), so a run reads all of silver and writes the
``event_date`` partitions of its window. ``hourly_order_patterns`` spans every date: each run
recomputes and replaces it whole.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from roundtrip.core.cli import step
from spark_jobs import storage
from spark_jobs.config import DateWindow, JobConfig
from spark_jobs.expressions import round_ratio, valid_rows

log = logging.getLogger(__name__)

DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# the gold models' declared types (models/gold/_gold__models.yml)
MONEY = "decimal(18, 2)"
RATE = "decimal(9, 4)"
PERCENT = "decimal(9, 2)"
PARTITIONED = ("daily_gmv_metrics", "item_performance", "user_funnel_metrics")
TABLES = (*PARTITIONED, "hourly_order_patterns")


@dataclass(frozen=True)
class SilverInput:
    orders_clean: DataFrame
    clicks_clean: DataFrame
    items: DataFrame  # item_id, item_title, category


@dataclass(frozen=True)
class Gold:
    daily_gmv_metrics: DataFrame
    item_performance: DataFrame
    user_funnel_metrics: DataFrame
    hourly_order_patterns: DataFrame


# ---------------------------------------------------------------- extract


def extract(spark: SparkSession, cfg: JobConfig) -> SilverInput:
    return SilverInput(
        orders_clean=storage.read_table(spark, cfg.table_path("silver", "orders_clean")),
        clicks_clean=storage.read_table(spark, cfg.table_path("silver", "clicks_clean")),
        items=storage.read_catalog(spark, cfg.catalog),
    )


# ---------------------------------------------------------------- transform (pure)


def transform(silver: SilverInput, window: DateWindow) -> Gold:
    orders, clicks = valid_rows(silver.orders_clean), valid_rows(silver.clicks_clean)
    in_window = storage.in_window(window)
    return Gold(
        daily_gmv_metrics=daily_gmv_metrics(orders).where(in_window),
        item_performance=item_performance(orders, clicks, silver.items).where(in_window),
        user_funnel_metrics=user_funnel_metrics(orders, clicks).where(in_window),
        hourly_order_patterns=hourly_order_patterns(orders),
    )


def daily_gmv_metrics(orders: DataFrame) -> DataFrame:
    """One row per event_date with valid orders."""
    first_orders = orders.groupBy("user_id").agg(F.min("event_date").alias("event_date"))
    new_users = first_orders.groupBy("event_date").agg(F.count("*").alias("new_users"))
    totals = orders.groupBy("event_date").agg(
        F.sum("amount").cast(MONEY).alias("gmv"),
        F.countDistinct("order_id").alias("order_count"),
        F.sum("quantity").cast("bigint").alias("items_sold"),
        F.countDistinct("user_id").alias("unique_users"),
    )
    previous_day = totals.select(F.date_add("event_date", 1).alias("event_date"), F.col("gmv").alias("previous_gmv"))
    new = F.coalesce(F.col("new_users"), F.lit(0))
    return (
        totals.join(new_users, "event_date", "left")
        .join(previous_day, "event_date", "left")
        .select(
            "event_date",
            "gmv",
            "order_count",
            "items_sold",
            "unique_users",
            round_ratio(F.col("gmv"), F.col("order_count")).cast(MONEY).alias("avg_order_value"),
            new.alias("new_users"),
            (F.col("unique_users") - new).alias("returning_users"),
            round_ratio((F.col("gmv") - F.col("previous_gmv")) * 100, F.col("previous_gmv"))
            .cast(MONEY)
            .alias("gmv_growth_pct"),
        )
    )


def item_performance(orders: DataFrame, clicks: DataFrame, items: DataFrame) -> DataFrame:
    """One row per (event_date, item_id) with valid clicks on the item or valid order lines of it."""
    keys = ["event_date", "item_id"]
    event = F.col("event_type")
    clicked = (
        clicks.where(F.col("item_id").isNotNull())
        .groupBy(*keys)
        .agg(
            F.count_if(event == "view").alias("views"),
            F.count_if(event == "click").alias("clicks"),
            F.count_if(event == "add_to_cart").alias("add_to_carts"),
        )
    )
    ordered = orders.groupBy(*keys).agg(
        F.countDistinct("order_id").alias("orders"),
        F.sum("quantity").cast("bigint").alias("units_sold"),
        F.sum("amount").cast(MONEY).alias("revenue"),
    )
    zero = {"views": 0, "clicks": 0, "add_to_carts": 0, "orders": 0, "units_sold": 0}
    return (
        clicked.join(ordered, keys, "full")
        .join(items, "item_id", "left")
        .select(
            *keys,
            "item_title",
            "category",
            *[F.coalesce(F.col(name), F.lit(value)).cast("bigint").alias(name) for name, value in zero.items()],
            F.coalesce(F.col("revenue"), F.lit(0).cast(MONEY)).alias("revenue"),
        )
        .withColumn("click_through_rate", round_ratio(F.col("clicks"), F.col("views"), 4).cast(RATE))
        .withColumn("conversion_rate", round_ratio(F.col("orders"), F.col("views"), 4).cast(RATE))
    )


def user_funnel_metrics(orders: DataFrame, clicks: DataFrame) -> DataFrame:
    """One row per event_date with valid clicks or orders. A session-day is an (event_date,
    session_id) with a non-NULL session_id; a user who clicked and ordered counts once."""
    steps = clicks.select("event_date", "session_id", "user_id", F.col("event_type").alias("step")).unionByName(
        orders.select("event_date", "session_id", "user_id", F.lit("order").alias("step"))
    )

    def sessions_with(step: str) -> F.Column:
        return F.countDistinct(F.when(F.col("step") == step, F.col("session_id")))

    return (
        steps.groupBy("event_date")
        .agg(
            F.countDistinct("session_id").alias("sessions"),
            sessions_with("search").alias("search_sessions"),
            sessions_with("view").alias("view_sessions"),
            sessions_with("click").alias("click_sessions"),
            sessions_with("add_to_cart").alias("add_to_cart_sessions"),
            sessions_with("order").alias("order_sessions"),
            F.countDistinct("user_id").alias("active_users"),
        )
        .withColumn("session_conversion_rate", round_ratio(F.col("order_sessions"), F.col("sessions"), 4).cast(RATE))
    )


def hourly_order_patterns(orders: DataFrame) -> DataFrame:
    """One row per (ISO day of week, UTC hour) with valid orders, over every date."""
    day_of_week = (F.weekday("event_date") + 1).cast("int")  # weekday(): 0 = Monday
    all_orders = orders.agg(F.countDistinct("order_id").alias("all_orders"))
    return (
        orders.withColumn("day_of_week", day_of_week)
        .withColumn("hour_of_day", F.hour("event_ts").cast("int"))
        .groupBy("day_of_week", "hour_of_day")
        .agg(
            F.countDistinct("order_id").alias("order_count"),
            F.sum("quantity").cast("bigint").alias("items_sold"),
            F.sum("amount").cast(MONEY).alias("gmv"),
            F.countDistinct("event_date").alias("active_days"),
        )
        .crossJoin(all_orders)
        .select(
            "day_of_week",
            F.element_at(F.array(*[F.lit(name) for name in DAY_NAMES]), F.col("day_of_week")).alias("day_name"),
            "hour_of_day",
            "order_count",
            "items_sold",
            "gmv",
            "active_days",
            round_ratio(F.col("order_count"), F.col("active_days")).cast(MONEY).alias("avg_orders_per_day"),
            round_ratio(F.col("order_count") * 100, F.col("all_orders")).cast(PERCENT).alias("share_of_orders_pct"),
        )
    )


# ---------------------------------------------------------------- load


def load(gold: Gold, cfg: JobConfig) -> None:
    for table in PARTITIONED:  # Spark computes a table when it writes it: each write is a stage
        with step(f"Spark: gold.{table}"):
            storage.write_partitions(getattr(gold, table), cfg.table_path("gold", table), cfg.window)
    with step("Spark: gold.hourly_order_patterns"):
        storage.replace_table(gold.hourly_order_patterns, cfg.table_path("gold", "hourly_order_patterns"))


HELP = "Silver -> the gold tables (the window's event_date partitions; hourly patterns whole)."


def run(spark: SparkSession, cfg: JobConfig) -> list[dict[str, object]]:
    started = time.perf_counter()
    log.info("silver -> gold for %s: tables under %s", cfg.window, cfg.output)
    load(transform(extract(spark, cfg), cfg.window), cfg)
    seconds = round(time.perf_counter() - started, 2)
    return [
        {
            "table": f"gold.{table}",
            "dates": str(cfg.window) if table in PARTITIONED else "every date (replaced whole)",
            "rows": storage.count_rows(spark, cfg.table_path("gold", table), cfg.window),
            "path": cfg.table_path("gold", table),
            "seconds": seconds,
        }
        for table in TABLES
    ]


def main(argv: list[str] | None = None) -> None:
    """``spark-submit spark_jobs/silver_to_gold.py --date ...``: this job alone."""
    from spark_jobs.entry import run_alone, silver_job

    run_alone(silver_job("silver -> gold", lambda: run), HELP, argv)


if __name__ == "__main__":
    main()
