"""Spark's silver and gold tables into a Postgres warehouse, where dbt reads them.

With ``medallion_engine: spark`` DuckDB reads Spark's Parquet in place and BigQuery through
external tables; Postgres cannot read Parquet, so this job copies each table into
``spark_silver.<table>`` / ``spark_gold.<table>`` of the warehouse (``ROUNDTRIP_WAREHOUSE_URL``)
over JDBC, the driver the jobs already use for the catalog. Each table is written beside the old
one and swapped in by one transaction, so a failed copy leaves the previous one; the swap drops
the views dbt made over the old table (``drop ... cascade``), which the ``dbt build`` that follows
makes again.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from spark_jobs import bronze_to_silver, silver_to_gold, storage
from spark_jobs.config import CatalogSource, JobConfig
from spark_jobs.errors import SparkJobError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

LAYERS = {"silver": bronze_to_silver.TABLES, "gold": silver_to_gold.TABLES}
BATCH_ROWS = 10_000


def schema_of(layer: str) -> str:
    """The warehouse schema of a layer's Spark tables: the dbt sources spark_silver / spark_gold."""
    return f"spark_{layer}"


def warehouse_url() -> str:
    from roundtrip.core.settings import load_settings

    url = load_settings().secret("warehouse_url")
    if not url:
        raise SparkJobError("no Postgres warehouse: set ROUNDTRIP_WAREHOUSE_URL (or ROUNDTRIP_POSTGRES_URL)")
    return str(url)


def run(spark: SparkSession, cfg: JobConfig, url: str | None = None) -> list[dict[str, object]]:
    """Every silver and gold table of ``cfg.output`` into the warehouse; what each now holds."""
    import psycopg
    from psycopg import sql

    url = url or warehouse_url()
    jdbc = CatalogSource.from_postgres_url(url)  # the same URL -> JDBC translation as the catalog read
    properties = {"driver": storage.JDBC_DRIVER, **({"user": jdbc.user} if jdbc.user else {})}
    if jdbc.password:
        properties["password"] = jdbc.password
    separator = "&" if "?" in str(jdbc.jdbc_url) else "?"
    jdbc_url = f"{jdbc.jdbc_url}{separator}reWriteBatchedInserts=true"
    done = []
    for layer, tables in LAYERS.items():
        schema = schema_of(layer)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
        for table in tables:
            started = time.perf_counter()
            frame = storage.read_table(spark, cfg.table_path(layer, table))
            staging = f"{table}__publishing"
            with storage.spark_errors(f"copying {cfg.table_path(layer, table)} into {schema}.{table}"):
                frame.write.option("batchsize", BATCH_ROWS).jdbc(
                    jdbc_url, f'"{schema}"."{staging}"', mode="overwrite", properties=properties
                )
            with psycopg.connect(url) as conn, conn.transaction():
                target, new = sql.Identifier(schema, table), sql.Identifier(schema, staging)
                conn.execute(sql.SQL("drop table if exists {} cascade").format(target))
                conn.execute(sql.SQL("alter table {} rename to {}").format(new, sql.Identifier(table)))
                count = conn.execute(sql.SQL("select count(*) from {}").format(target)).fetchone()
            done.append(
                {
                    "table": f"{schema}.{table}",
                    "rows": count[0] if count else 0,
                    "from": cfg.table_path(layer, table),
                    "seconds": round(time.perf_counter() - started, 2),
                }
            )
            log.info("published %s.%s (%s rows)", schema, table, done[-1]["rows"])
    return done
