"""The benchmark runner at a toy size, so that `make bench` does not rot between runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.core import Result, environment, parse_size


def test_sizes_read_like_people_write_them() -> None:
    assert [parse_size(s) for s in ("1m", "250k", "12345", "2.5M")] == [1_000_000, 250_000, 12_345, 2_500_000]
    with pytest.raises(ValueError, match="1m, 250k or 12345"):
        parse_size("ten")


def test_a_result_is_judged_on_its_ratio_against_the_target() -> None:
    assert Result("b", "rows/s", 60.0, "rows/s", 100.0, "copy", ">= 0.5").passed is True
    assert Result("b", "rows/s", 40.0, "rows/s", 100.0, "copy", ">= 0.5").passed is False
    assert Result("b", "s", 6.0, "s", 100.0, "full", "<= 0.05").passed is False
    assert Result("b", "s", 6.0, "s", None, None, None).passed is None


def test_a_target_with_a_unit_judges_the_value_itself() -> None:
    assert Result("b", "s", 1.5, "s", 9.0, "dbt run", "<= 2 s").passed is True
    assert Result("b", "s", 2.5, "s", 90.0, "dbt run", "<= 2 s").passed is False  # whatever the ratio
    with pytest.raises(ValueError, match="unit"):
        _ = Result("b", "rows/s", 1.5, "rows/s", 9.0, "copy", "<= 2 s").passed


@pytest.mark.postgres
def test_postgres_benchmark_runs_end_to_end_at_a_toy_size(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    main(["--size", "3000", "--only", "postgres_sync", "--repeat", "1", "--out", str(out), "--workdir", str(tmp_path)])
    report = json.loads(out.read_text())
    results = report["benchmarks"]["postgres_sync"]["results"]
    # the benchmark checks the sync's counts itself (3000 inserted, then 30 and 3000 updated, twice)
    assert [(r["benchmark"], r["target"]) for r in results] == [
        ("postgres_sync", ">= 0.5"),  # first sync vs COPY into an unlogged table
        ("postgres_sync", ">= 0.9"),  # vs COPY into a logged table, then its primary key
        ("postgres_sync", ">= 0.9"),  # vs DuckDB's reload through its postgres extension
        ("postgres_sync", None),  # vs executemany
        ("postgres_sync", ">= 0.3"),  # every row changed (written whole) vs COPY
        ("postgres_sync", "<= 1.2"),  # every row changed vs the first sync
        ("postgres_sync", None),  # vs the same re-sync as an upsert
        ("postgres_sync", None),  # the upsert vs its ON CONFLICT statement alone
        ("postgres_resync", "<= 0.1"),  # 1 % changed vs the first sync
        ("postgres_resync", "<= 0.5"),  # 1 % changed vs DuckDB's reload
        ("postgres_resync", None),  # nothing changed: the floor
        ("postgres_resync", "<= 0.3"),  # nothing changed vs DuckDB's reload
    ]
    assert all(r["value"] > 0 and r["baseline"] > 0 and r["ratio"] > 0 for r in results)
    assert report["machine_before"]["cpus"] >= 1


def test_dlt_baseline_runs_end_to_end_at_a_toy_size_and_compares_the_warehouses(tmp_path: Path) -> None:
    pytest.importorskip("dlt", reason="dlt is the bench extra (make bench installs it)")
    out = tmp_path / "results.json"
    main(["--size", "3000", "--only", "dlt_baseline", "--repeat", "1", "--out", str(out), "--workdir", str(tmp_path)])
    report = json.loads(out.read_text())
    # the benchmark raises when the two warehouses differ: results mean they held the same rows
    results = report["benchmarks"]["dlt_baseline"]["results"]
    assert [r["target"] for r in results] == [">= 1.2", ">= 2"]
    assert results[0]["details"]["repetitions"][0]["changed"] == 30  # 1 % of 3000
    assert all(r["value"] > 0 and r["baseline"] > 0 for r in results)


def test_dlt_baseline_fails_loudly_when_the_warehouses_differ(tmp_path: Path) -> None:
    pytest.importorskip("dlt", reason="dlt is the bench extra (make bench installs it)")
    import duckdb

    from benchmarks import dlt_baseline
    from roundtrip.dev.sample_data import SampleConfig, generate

    app_db = tmp_path / "app.db"
    generate(SampleConfig(users=200, items=10, orders=10, clicks=10), app_db, tmp_path / "landing", None)
    source = dlt_baseline.users_source(app_db)
    ours, theirs = tmp_path / "rt.duckdb", tmp_path / "dlt.duckdb"
    dlt_baseline.roundtrip_load(source, ours)
    with environment(**dlt_baseline.DLT_ENV):
        dlt_baseline.dlt_load(source, theirs, tmp_path / "pipelines")
    dlt_baseline.compare(source, ours, theirs, 200)  # the same rows: no error
    with duckdb.connect(str(theirs)) as con:
        con.execute("update raw_app.users set birth_year = null where user_id = 7")
    with pytest.raises(RuntimeError, match="the warehouses differ"):
        dlt_baseline.compare(source, ours, theirs, 200)


def test_growth_finds_the_crossover_measured_extrapolated_or_none() -> None:
    from benchmarks.growth import Job, Stage, crossover

    def job(engine: str, orders: int, seconds: float) -> Job:
        return Job(engine, orders, [Stage("generate", 99.0, 1), Stage("load", seconds, 1), Stage("syncs", 99.0, 1)])

    million = 1_000_000
    sizes = (million, 5 * million, 10 * million)
    # seconds = fixed cost + cost per order: Spark starts slower, grows slower, meets DuckDB at 20 M
    later = [job("duckdb", n, 10 + 5e-6 * n) for n in sizes] + [job("spark local", n, 50 + 3e-6 * n) for n in sizes]
    how, orders = crossover(later)
    assert how.startswith("extrapolated") and orders == pytest.approx(20 * million)
    catches_up = [job("duckdb", n, 10 * n) for n in (1, 5, 10)] + [job("spark local", n, 46 + n) for n in (1, 5, 10)]
    assert crossover(catches_up) == ("measured at 10 orders", 10.0)
    steeper = [job("duckdb", n, 2 * n) for n in (1, 5, 10)] + [job("spark local", n, 10 + 3 * n) for n in (1, 5, 10)]
    how, orders = crossover(steeper)
    assert orders is None and how.startswith("none")


def test_growth_counts_the_memory_of_a_whole_process_tree() -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from benchmarks.growth import tree_rss_mb

    # a parent holding ~60 MB whose child holds ~120 MB: the tree is both
    code = (
        "import subprocess, sys, time; block = bytearray(60 << 20); "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; b = bytearray(120 << 20); time.sleep(30)']); "
        "time.sleep(30)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while tree_rss_mb([parent.pid]) < 180 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert 180 <= tree_rss_mb([parent.pid]) < 400
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the group this test started: parent and child
        parent.wait()


def test_loader_memory_benchmark_holds_back_the_long_line_and_loads_the_rest(tmp_path: Path) -> None:
    """At a toy size (2,000 lines, a 96 MiB line): the benchmark checks the two loads' counts
    itself and raises when they differ; here, what it reports."""
    from benchmarks.loader_memory import measure

    result = measure(tmp_path, 2_000, 96 << 20)
    ordinary, with_line = result.details["ordinary"], result.details["with_long_line"]
    assert ordinary["inserted"] == with_line["inserted"] >= 2_000
    assert (ordinary["held_back"], with_line["held_back"]) == (0, 1)
    assert result.value > 0 and result.baseline and result.target == "<= 400 MB"
    assert not (tmp_path / "landing" / "orders" / "zz-no-line-break.jsonl").exists()
