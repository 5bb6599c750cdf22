"""The auto engine: a cheap, honest estimate of the bronze rows, and the choice it drives."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from roundtrip.core.errors import ConfigError
from roundtrip.dev.sample_data import SampleConfig, generate
from roundtrip.dev.sample_data.model import items_table
from spark_jobs import auto
from spark_jobs.cli import main
from spark_jobs.errors import SparkJobError
from spark_jobs.landing import detect_format

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


def test_the_format_is_detected_from_the_files(landing: tuple[Path, str, dict[str, int]], tmp_path: Path) -> None:
    path, fmt, _ = landing
    assert detect_format(str(path)) == fmt
    assert detect_format(str(tmp_path)) == "jsonl"  # nothing landed yet
    mixed = tmp_path / "mixed"
    for stream, name in (("orders", "a.jsonl"), ("clicks", "b.parquet")):
        (mixed / stream / "dt=2026-11-20").mkdir(parents=True)
        (mixed / stream / "dt=2026-11-20" / name).write_bytes(b"")
    with pytest.raises(SparkJobError, match=r"more than one format: jsonl \(.*a\.jsonl\), parquet \(.*b\.parquet\)"):
        detect_format(str(mixed))


def test_choice_follows_the_threshold() -> None:
    assert auto.choose_engine(1_001, 1_000).engine == "spark"
    assert auto.choose_engine(1_000, 1_000).engine == "warehouse"
    assert auto.choose_engine(0, 0).engine == "warehouse"
    with pytest.raises(SparkJobError, match="threshold"):
        auto.choose_engine(5, -1)


def test_threshold_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUNDTRIP_SPARK_THRESHOLD_ROWS", raising=False)
    monkeypatch.delenv("ROUNDTRIP_SPARK_MASTER", raising=False)
    assert auto.threshold_from_settings() is None  # local mode: the warehouse at any size
    plan = auto.choose_engine(10**12, auto.threshold_from_settings())
    assert plan.engine == "warehouse" and "ROUNDTRIP_SPARK_MASTER" in plan.reason
    monkeypatch.setenv("ROUNDTRIP_SPARK_MASTER", "spark://10.0.0.5:7077")
    assert auto.threshold_from_settings() == 20_000_000
    assert auto.choose_engine(20_000_001, auto.threshold_from_settings()).engine == "spark"
    monkeypatch.setenv("ROUNDTRIP_SPARK_THRESHOLD_ROWS", "5_000_000")
    assert auto.threshold_from_settings() == 5_000_000
    monkeypatch.setenv("ROUNDTRIP_SPARK_THRESHOLD_ROWS", "many")
    with pytest.raises(ConfigError, match="ROUNDTRIP_SPARK_THRESHOLD_ROWS"):
        auto.threshold_from_settings()


@pytest.mark.parametrize(("below_total", "engine"), [(1, "spark"), (0, "warehouse")])
def test_auto_plan_prints_the_choice_and_why(
    landing: tuple[Path, str, dict[str, int]], capsys: pytest.CaptureFixture[str], below_total: int, engine: str
) -> None:
    path, _, truth = landing
    total = sum(truth.values())
    threshold = total - below_total
    main(["auto", "--plan", "--json", "--threshold", str(threshold), "--landing", str(path)])  # format: detected
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["stream"], line["rows"]) for line in lines[:2]] == list(truth.items())
    assert lines[-1]["engine"] == engine
    assert f"{threshold:,}" in lines[-1]["reason"] and f"{total:,}" in lines[-1]["reason"]


@pytest.mark.spark
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_auto_above_threshold_runs_the_medallion_on_spark(
    spark: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI in this process: it finds the test session already running and uses it."""
    small = SampleConfig(seed=2, users=30, items=20, orders=150, clicks=300, days=1)
    report = generate(small, tmp_path / "app.db", tmp_path / "landing", None)
    pq.write_table(items_table(small), tmp_path / "items.parquet")
    output = tmp_path / "spark"
    main(
        [
            "auto",
            "--threshold",
            "0",
            "--json",
            "--landing",
            str(tmp_path / "landing"),
            "--output",
            str(output),
            "--catalog-parquet",
            str(tmp_path / "items.parquet"),
            "--medallion-only",
        ]
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["engine"] for line in lines if "engine" in line] == ["spark"]
    written = {line["table"]: line["rows"] for line in lines if "table" in line}
    assert written["silver.orders_clean"] == report.orders and written["silver.clicks_clean"] == report.clicks
    assert set(written) == {f"silver.{t}" for t in ("orders_clean", "clicks_clean")} | {
        f"gold.{t}" for t in ("daily_gmv_metrics", "item_performance", "user_funnel_metrics", "hourly_order_patterns")
    }
    on_disk = duckdb.connect().execute(
        f"select count(*) from read_parquet('{output}/silver/clicks_clean/**/*.parquet', hive_partitioning = true)"
    )
    assert on_disk.fetchone() == (report.clicks,)
