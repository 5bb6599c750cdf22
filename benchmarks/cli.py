"""``python -m benchmarks``: run the benchmarks, print a table, write the results as JSON."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.core import Context, Result, human, machine, parse_size
from benchmarks.peer_tools import PEERS
from benchmarks.processes import busy_processes
from roundtrip.core.paths import PROJECT_ROOT

# name -> module; each has run(ctx) -> list[Result]
BENCHMARKS = {
    "postgres_sync": "benchmarks.postgres_sync",
    "sync_peers": "benchmarks.sync_peers",
    "source_sync": "benchmarks.source_sync",
    "redis_sync": "benchmarks.redis_sync",
    "sync_verify": "benchmarks.sync_verify",
    "bigquery_sync": "benchmarks.bigquery_sync",
    "dlt_baseline": "benchmarks.dlt_baseline",
    "bigquery_source": "benchmarks.bigquery_source",
    "dbt_overhead": "benchmarks.dbt_overhead",
    "serving_refresh": "benchmarks.serving_refresh",
    "spark_vs_duckdb": "benchmarks.spark_vs_duckdb",
    "memory": "benchmarks.memory",
    "growth": "benchmarks.growth",
    "loader_memory": "benchmarks.loader_memory",
}
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"


def table(results: list[Result]) -> str:
    header = ("benchmark", "metric", "value", "baseline", "ratio", "target", "")
    rows = [header]
    for r in results:
        verdict = {True: "pass", False: "MISS", None: ""}[r.passed]
        rows.append(
            (
                r.benchmark,
                r.metric,
                f"{human(round(r.value, 2))} {r.unit}",
                f"{human(round(r.baseline, 2))} ({r.baseline_name})" if r.baseline is not None else "",
                f"{r.ratio:.2f}x" if r.ratio is not None else "",
                r.target or "",
                verdict,
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--size", default="1m", help="rows (syncs) or orders (dbt, Spark): 1m, 250k, 10m ...")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--repeat", type=int, default=2, help="repetitions of each interleaved measurement")
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/<time>-<size>.json)")
    parser.add_argument("--workdir", type=Path, help="where data and servers live (default: a temp folder)")
    parser.add_argument("--peers", default="", help=f"sync_peers: comma-separated subset of {', '.join(PEERS)}")
    parser.add_argument("--multiples", default="1,5,10",
                        help="growth: the sizes run, as comma-separated multiples of --size (e.g. 5,10)")  # fmt: skip
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="N busy processes (one core each) running beside the benchmarks: a loaded machine")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    size = parse_size(args.size)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")

    peers = tuple(p.strip() for p in args.peers.split(",") if p.strip())
    if [p for p in peers if p not in PEERS]:
        parser.error(f"unknown peer(s) in {args.peers!r}; choose from {', '.join(PEERS)}")
    try:
        multiples = tuple(int(m) for m in args.multiples.split(",") if m.strip())
    except ValueError:
        parser.error(f"--multiples {args.multiples!r}: comma-separated whole numbers, e.g. 1,5,10")
    if not multiples or min(multiples) < 1:
        parser.error(f"--multiples {args.multiples!r}: one or more whole numbers of 1 or more")
    if args.load < 0:
        parser.error("--load must be 0 or more")

    started = datetime.now(UTC)
    report: dict[str, Any] = {"started": started.isoformat(timespec="seconds"), "size": size,
                              "command": " ".join(["python -m benchmarks", *(argv or sys.argv[1:])]),
                              "machine_before": machine(), "busy_processes": args.load, "benchmarks": {}}  # fmt: skip
    results: list[Result] = []
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)  # a folder named is a folder made
    with tempfile.TemporaryDirectory(prefix="roundtrip-bench-", dir=args.workdir) as tmp:
        ctx = Context(size=size, workdir=Path(tmp), repeat=args.repeat, peers=peers, multiples=multiples)
        with ctx.stack:
            if args.load:
                ctx.stack.enter_context(busy_processes(args.load))
                print(f"== {args.load} busy process(es) running beside the benchmarks (--load)", flush=True)
            for name in names:
                print(f"== {name} ({human(size)})", flush=True)
                t0 = time.perf_counter()
                try:
                    found = importlib.import_module(BENCHMARKS[name]).run(ctx)
                except Exception as exc:  # one benchmark failing does not lose the others' figures
                    logging.getLogger("benchmarks").exception("%s failed", name)
                    report["benchmarks"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                    continue
                seconds = round(time.perf_counter() - t0, 1)
                report["benchmarks"][name] = {"seconds": seconds, "results": [r.as_dict() for r in found]}
                results += found
                print(table(found), f"\n({seconds}s)\n", flush=True)
    report["machine_after"] = machine()
    print(table(results))
    busy = f"; {args.load} busy processes beside (--load)" if args.load else ""
    print(f"\nmachine: {report['machine_before']}; load average after: {report['machine_after']['load_average']}{busy}")
    out = args.out or RESULTS_DIR / f"{started:%Y%m%dT%H%M%S}-{human(size)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"results: {out}")
    if any("error" in b for b in report["benchmarks"].values()):
        sys.exit(1)
