"""The one way jobs and tests get a SparkSession: adaptive execution on, quiet, files contained.

Two kinds of settings:
- job settings decide results (time zone, ANSI casts, partition overwrite mode, AQE); they are
  applied to every session, including one started by ``spark-submit`` on a cluster;
- launch settings (master, driver memory, temp folders, the JDBC jar, log4j config) only apply when
  this process starts the JVM itself (local runs and tests); under ``spark-submit`` the cluster
  and its flags decide them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Debian's libpostgresql-jdbc-java (make setup installs it)
DEFAULT_JDBC_JAR = Path("/usr/share/java/postgresql.jar")
LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")

JOB_CONF = {
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.sql.adaptive.skewJoin.enabled": "true",
    # a run replaces the event_date partitions it produces and leaves every other one alone
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    # text -> number casts give NULL through try_cast, never a silently truncated value
    "spark.sql.ansi.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}


@dataclass(frozen=True)
class SparkSettings:
    master: str = "local[*]"
    driver_memory: str = "2g"
    temp_dir: Path = Path("data/spark-tmp")
    jdbc_jar: Path = DEFAULT_JDBC_JAR
    shuffle_partitions: int | None = None
    ui: bool = False

    @classmethod
    def from_env(cls) -> SparkSettings:
        """From the project's settings (``ROUNDTRIP_SPARK_*``)."""
        from roundtrip.core.settings import load_settings

        s = load_settings()
        return cls(
            master=s.spark_master,
            driver_memory=s.spark_driver_memory,
            temp_dir=s.spark_tmp or s.data_dir / "spark-tmp",
            jdbc_jar=s.spark_jdbc_jar,
            shuffle_partitions=s.spark_shuffle_partitions,
            ui=s.spark_ui,
        )


def launched_by_spark_submit() -> bool:
    """``spark-submit`` starts the JVM first and hands Python the gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def launch_conf(settings: SparkSettings) -> dict[str, str]:
    """Settings for a JVM this process starts: everything it writes stays under ``temp_dir``."""
    tmp = settings.temp_dir
    for sub in ("local", "java", "warehouse"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    java_options = " ".join(
        [
            f"-Djava.io.tmpdir={tmp / 'java'}",
            f"-Dderby.system.home={tmp / 'derby'}",  # metastore_db/ and derby.log, should Hive ever be used
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG.as_uri()}",
        ]
    )
    conf = {
        "spark.master": settings.master,
        "spark.driver.memory": settings.driver_memory,
        "spark.local.dir": str(tmp / "local"),
        "spark.sql.warehouse.dir": str(tmp / "warehouse"),
        "spark.driver.extraJavaOptions": java_options,
        "spark.ui.enabled": str(settings.ui).lower(),
        "spark.ui.showConsoleProgress": "false",
    }
    if settings.master.startswith("local") or _on_loopback(settings.master):
        # executors on this machine reach the driver on loopback: nothing listens elsewhere
        conf |= {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    if settings.shuffle_partitions:
        conf["spark.sql.shuffle.partitions"] = str(settings.shuffle_partitions)
    if settings.jdbc_jar.is_file():
        conf["spark.jars"] = str(settings.jdbc_jar)
        conf["spark.driver.extraClassPath"] = str(settings.jdbc_jar)
    else:
        log.debug("no JDBC jar at %s: the Postgres catalog cannot be read over JDBC", settings.jdbc_jar)
    return conf


def _on_loopback(master: str) -> bool:
    """A standalone master on this machine's loopback (``spark://127.0.0.1:7077``)."""
    from urllib.parse import urlparse

    return master.startswith("spark://") and urlparse(master).hostname in ("127.0.0.1", "localhost", "::1")


def build_session(settings: SparkSettings | None = None, app_name: str = "roundtrip") -> SparkSession:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if not launched_by_spark_submit():
        for key, value in launch_conf(settings or SparkSettings.from_env()).items():
            builder = builder.config(key, value)
    for key, value in JOB_CONF.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    for key, value in JOB_CONF.items():  # also when getOrCreate returned a session that already existed
        spark.conf.set(key, value)
    spark.sparkContext.setLogLevel("ERROR")
    return spark
