"""The auto engine: a cheap, honest estimate of the bronze rows, and the choice it drives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from roundtrip.paths import PROJECT_ROOT
from roundtrip.sample_data import SampleConfig, generate
from spark_jobs import auto
from spark_jobs.cli import main
from spark_jobs.errors import SparkJobError

SAMPLE = SampleConfig(seed=9, users=100, items=50, orders=2_000, clicks=4_000, days=5)


@pytest.fixture(scope="module", params=["jsonl", "csv", "parquet"])
def landing(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, dict[str, int]]:
    """Landing files in one format, and the true number of records per stream."""
    root = tmp_path_factory.mktemp(f"auto-{request.param}")
    report = generate(SAMPLE, root / "app.db", root / "landing", None, request.param)
    return root / "landing", request.param, {"orders": report.orders, "clicks": report.clicks}


def test_small_files_are_counted_exactly(landing: tuple[Path, str, dict[str, int]]) -> None:
    path, fmt, truth = landing
    estimates = auto.estimate_bronze(str(path), fmt)  # type: ignore[arg-type]
    assert {e.stream: (e.rows, e.exact) for e in estimates} == {s: (n, True) for s, n in truth.items()}
    assert {e.stream: e.files for e in estimates} == {s: len(list((path / s).rglob(f"*.{fmt}"))) for s in truth}


@pytest.mark.parametrize("landing", ["jsonl", "csv"], indirect=True)  # Parquet: always exact, from footers
def test_large_files_are_estimated_from_a_sample(
    landing: tuple[Path, str, dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, fmt, truth = landing
    monkeypatch.setattr(auto, "SAMPLE_BYTES", 8_192)
    monkeypatch.setattr(auto, "SAMPLE_FILES", 2)
    for estimate in auto.estimate_bronze(str(path), fmt):  # type: ignore[arg-type]
        assert not estimate.exact
        assert abs(estimate.rows - truth[estimate.stream]) / truth[estimate.stream] < 0.05, estimate


def test_missing_stream_counts_as_empty(tmp_path: Path) -> None:
    assert [(e.stream, e.rows, e.files) for e in auto.estimate_bronze(str(tmp_path), "jsonl")] == [
        ("orders", 0, 0),
        ("clicks", 0, 0),
    ]


def test_choice_follows_the_threshold() -> None:
    assert auto.choose_engine(1_001, 1_000).engine == "spark"
    assert auto.choose_engine(1_000, 1_000).engine == "warehouse"
    assert auto.choose_engine(0, 0).engine == "warehouse"
    with pytest.raises(SparkJobError, match="threshold"):
        auto.choose_engine(5, -1)


def test_threshold_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(auto.THRESHOLD_ENV, raising=False)
    assert auto.threshold_from_env() == auto.DEFAULT_THRESHOLD
    monkeypatch.setenv(auto.THRESHOLD_ENV, "5_000_000")
    assert auto.threshold_from_env() == 5_000_000
    monkeypatch.setenv(auto.THRESHOLD_ENV, "many")
    with pytest.raises(SparkJobError, match=auto.THRESHOLD_ENV):
        auto.threshold_from_env()


@pytest.mark.parametrize(("below_total", "engine"), [(1, "spark"), (0, "warehouse")])
def test_auto_plan_prints_the_choice_and_why(
    landing: tuple[Path, str, dict[str, int]], capsys: pytest.CaptureFixture[str], below_total: int, engine: str
) -> None:
    path, fmt, truth = landing
    total = sum(truth.values())
    threshold = total - below_total
    main(["auto", "--plan", "--json", "--threshold", str(threshold), "--landing", str(path), "--format", fmt])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["stream"], line["rows"]) for line in lines[:2]] == list(truth.items())
    assert lines[-1]["engine"] == engine
    assert f"{threshold:,}" in lines[-1]["reason"] and f"{total:,}" in lines[-1]["reason"]


@pytest.mark.spark
@pytest.mark.slow
def test_auto_above_threshold_runs_spark_quietly_and_contained(tmp_path: Path) -> None:
    """The CLI end to end in its own process: Spark chosen, tables written, no Spark chatter on
    stderr, every Spark file under ROUNDTRIP_DATA_DIR, nothing in the working or project folder."""
    import pyarrow.parquet as pq

    from roundtrip.sample_data.model import items_table

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
            "auto",
            "--threshold",
            "0",
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
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert any(line.get("engine") == "spark" for line in lines)
    written = {line["table"]: line["rows"] for line in lines if "table" in line}
    assert written["silver.orders_clean"] == report.orders and written["silver.clicks_clean"] == report.clicks

    con = duckdb.connect()
    on_disk = con.execute(
        f"select count(*) from read_parquet('{data}/spark/silver/orders_clean/**/*.parquet', hive_partitioning = true)"
    ).fetchone()
    assert on_disk == (report.orders,)
    chatter = [line for line in done.stderr.splitlines() if line.strip() and "jdk.incubator.vector" not in line]
    assert chatter == []
    assert {p.name for p in (data / "spark-tmp").iterdir()} >= {"local", "java", "warehouse"}
    assert {p.name for p in tmp_path.iterdir()} == {"data", "items.parquet"}
    assert {name for name in strays if (PROJECT_ROOT / name).exists()} == project_strays
