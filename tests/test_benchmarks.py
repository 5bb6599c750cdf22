"""The benchmark runner at a toy size, so that `make bench` does not rot between runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.core import Result, parse_size


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
    # the benchmark checks the sync's counts itself (3000 inserted, then 30 and 3000 updated)
    assert [(r["benchmark"], r["target"]) for r in results] == [
        ("postgres_sync", ">= 0.5"),
        ("postgres_sync", None),
        ("postgres_sync", ">= 0.5"),
        ("postgres_resync", "<= 0.05"),
    ]
    assert all(r["value"] > 0 and r["baseline"] > 0 and r["ratio"] > 0 for r in results)
    assert report["machine_before"]["cpus"] >= 1
