"""Peak RSS of a file load whose folder holds a 2 GiB line without a break, next to an ordinary load.

The ordinary load: ``size`` generated order lines, at most 200,000 (the sample data's JSON-lines
files), into a fresh DuckDB warehouse. Past that size the ordinary load's own peak grows with
the rows one transaction groups (``jobs.GROUP_ROWS``), which says nothing about long lines. The candidate: the same files plus one sparse file of 2 GiB of NUL
bytes with no line break, which the loader must hold back (a line longer than
``max_line_bytes``) while every order line loads. Each load runs alone in a child process
(``python -m benchmarks.loader_memory``) that checks its own counts and reports its peak
resident memory (``VmHWM``). Target: the load with the 2 GiB line stays under 400 MB.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchmarks.core import Context, Result, human, python, run_checked

NAME = "loader_memory"
LINE_BYTES = 2 << 30
MAX_ORDERS = 200_000
TARGET_MB = 400


def run(ctx: Context) -> list[Result]:
    return [measure(ctx.path(NAME), min(ctx.size, MAX_ORDERS), LINE_BYTES)]


def measure(folder: Path, orders: int, line_bytes: int) -> Result:
    """Both loads of ``orders`` order lines, without and with a ``line_bytes`` line."""
    from roundtrip.dev.sample_data import SampleConfig, generate

    landing = folder / "landing"
    generate(SampleConfig(users=max(1_000, orders // 10), orders=orders, clicks=1), folder / "app.db", landing, None)
    ordinary = _load(landing / "orders", folder / "ordinary.duckdb")
    long_file = landing / "orders" / "zz-no-line-break.jsonl"
    with open(long_file, "wb") as handle:  # sparse: no disk space, the loader reads NUL bytes
        handle.truncate(line_bytes)
    try:
        with_line = _load(landing / "orders", folder / "long-line.duckdb")
    finally:
        long_file.unlink()
    if (with_line["inserted"], with_line["held_back"]) != (ordinary["inserted"], ordinary["held_back"] + 1):
        raise RuntimeError(f"{NAME}: the load with the long line differs from the ordinary one: {with_line} {ordinary}")
    return Result(
        NAME,
        f"peak RSS MB, files load of {human(ordinary['inserted'])} lines + a {line_bytes >> 20:,} MiB line",
        with_line["peak_rss_mb"],
        "MB",
        ordinary["peak_rss_mb"],
        "the same load without that file",
        f"<= {TARGET_MB} MB",
        details={"ordinary": ordinary, "with_long_line": with_line},
    )


def _load(folder: Path, warehouse: Path) -> dict[str, float]:
    output = run_checked([python(), "-m", "benchmarks.loader_memory", str(folder), str(warehouse)])
    return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    """Child: load the orders stream of one folder into a new DuckDB file; counts and peak RSS as JSON."""
    from benchmarks.memory import own_peak_rss_mb
    from loaders import jobs
    from loaders.config import FileStreamConfig
    from loaders.warehouse.duckdb import DuckDBWarehouse

    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("warehouse")
    args = parser.parse_args()
    stream = FileStreamConfig(path=args.folder, table="orders", contract="orders")
    warehouse = DuckDBWarehouse(Path(args.warehouse))
    try:
        report = jobs.load_files("orders", stream, warehouse)
    finally:
        warehouse.close()
    os.remove(args.warehouse)
    print(json.dumps({**report.as_dict(), "peak_rss_mb": round(own_peak_rss_mb(), 1)}))


if __name__ == "__main__":
    main()
