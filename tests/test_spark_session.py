"""Spark quiet and contained: the session's settings, and a job run in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.dev.sample_data import SampleConfig, generate
from roundtrip.dev.sample_data.model import items_table

pytestmark = pytest.mark.spark


def test_session_settings(spark: SparkSession) -> None:
    """The test session is built by spark_jobs.session like the jobs' own."""
    conf = spark.conf
    assert conf.get("spark.sql.adaptive.enabled") == "true"
    assert conf.get("spark.sql.sources.partitionOverwriteMode") == "dynamic"
    assert conf.get("spark.sql.ansi.enabled") == "true"
    assert conf.get("spark.sql.session.timeZone") == "UTC"
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    assert str(jvm.org.apache.logging.log4j.LogManager.getRootLogger().getLevel()) == "ERROR"
    temp = Path(spark.sparkContext.getConf().get("spark.local.dir") or "/").parent
    assert temp.name.startswith("spark-tmp")
    assert Path(str(jvm.java.lang.System.getProperty("java.io.tmpdir"))).parent == temp
    assert conf.get("spark.sql.warehouse.dir", "").removeprefix("file:").startswith(str(temp))


@pytest.mark.slow
def test_a_job_in_its_own_process_is_quiet_and_keeps_its_files_under_the_data_dir(tmp_path: Path) -> None:
    """``python -m spark_jobs`` as a user runs it: no Spark chatter on stderr, every Spark file
    under ROUNDTRIP_DATA_DIR, nothing in the working folder or the project."""
    data = tmp_path / "data"
    small = SampleConfig(seed=2, users=30, items=20, orders=150, clicks=300, days=1)
    report = generate(small, data / "app.db", data / "landing", None)
    pq.write_table(items_table(small), tmp_path / "items.parquet")
    strays = ("spark-warehouse", "metastore_db", "derby.log")
    project_strays = {name for name in strays if (PROJECT_ROOT / name).exists()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUNDTRIP_")}
    env |= {"ROUNDTRIP_DATA_DIR": str(data), "ROUNDTRIP_LOG_LEVEL": "WARNING", "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "spark_jobs",
            "bronze-to-silver",
            "--json",
            "--catalog-parquet",
            str(tmp_path / "items.parquet"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    written = {line["table"]: line["rows"] for line in map(json.loads, done.stdout.splitlines())}
    assert written == {"silver.orders_clean": report.orders, "silver.clicks_clean": report.clicks}
    assert (data / "spark" / "silver" / "orders_clean").is_dir()
    # the one line the JVM prints itself, for the options pyspark starts Java 17 with
    chatter = [line for line in done.stderr.splitlines() if line.strip() and "jdk.incubator.vector" not in line]
    assert chatter == []
    assert {p.name for p in (data / "spark-tmp").iterdir()} >= {"local", "java", "warehouse"}
    assert {p.name for p in tmp_path.iterdir()} == {"data", "items.parquet"}
    assert {name for name in strays if (PROJECT_ROOT / name).exists()} == project_strays
