"""Peak RSS of each reverse sync at ``size`` and 10 x ``size`` rows: memory must not follow the table.

Each sync runs alone in a child process (``python -m benchmarks.memory``) which reports its own
peak resident memory (``VmHWM`` of /proc/self/status: the high-water mark of the process's own
address space since its exec; ``ru_maxrss`` would carry the parent's peak over the exec). The
model is built before, by the parent. Target: the peak at 10 x the rows within 20 % of the peak at 1 x.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.core import Context, Result, environment, human, python, run_checked
from benchmarks.sync_data import build_model, postgres_spec, redis_spec

NAME = "memory"
PEAK_MB = 250  # dlt's and sling's process trees at 1 M rows (sync_peers)


def run(ctx: Context) -> list[Result]:
    pg, rd = ctx.postgres(), ctx.redis()
    results = []
    peaks: dict[str, dict[int, float]] = {"postgres": {}, "redis": {}}
    for rows in (ctx.size, ctx.size * 10):
        warehouse = ctx.path(f"{NAME}-{rows}") / "warehouse.duckdb"
        build_model(warehouse, rows)
        for kind in peaks:
            with environment(ROUNDTRIP_DUCKDB_PATH=str(warehouse)):
                output = run_checked(
                    [python(), "-m", "benchmarks.memory", kind, f"bench_mem_{kind}_{rows}", pg.url(), rd.url()]
                )
            counts = json.loads(output.strip().splitlines()[-1])
            if counts["inserted"] != rows:
                raise RuntimeError(f"memory: {kind} sync of {rows} rows inserted {counts}")
            peaks[kind][rows] = counts["peak_rss_mb"]
        warehouse.unlink()
    for kind, by_rows in peaks.items():
        small, large = by_rows[ctx.size], by_rows[ctx.size * 10]
        results.append(
            Result(NAME, f"peak RSS MB, {kind} sync of {human(ctx.size)} rows", small, "MB",
                   target=f"<= {PEAK_MB} MB" if ctx.size >= 1_000_000 else None,
                   note=f"the peers' peak at 1 M rows is about {PEAK_MB} MB")
        )  # fmt: skip
        results.append(
            Result(NAME, f"peak RSS MB, {kind} sync of {human(ctx.size * 10)} rows", large, "MB", small,
                   f"the same sync of {human(ctx.size)} rows", "<= 1.2")
        )  # fmt: skip
    return results


def main() -> None:
    """Child: one sync of the model in ROUNDTRIP_DUCKDB_PATH, its counts as JSON on stdout."""
    from reverse_etl.engine import Connections, run_sync

    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["postgres", "redis"])
    parser.add_argument("sync")
    parser.add_argument("postgres_url")
    parser.add_argument("redis_url")
    args = parser.parse_args()
    spec = (
        postgres_spec(args.sync, f"bench.{args.sync}")
        if args.kind == "postgres"
        else redis_spec(args.sync, f"{args.sync}:{{user_id}}")
    )
    result = run_sync(spec, Connections.of(args.postgres_url, args.redis_url))
    if not result.ok:
        raise SystemExit(f"{args.sync}: {result.status}: {result.error}")
    print(json.dumps({**result.counts.as_dict(), "peak_rss_mb": own_peak_rss_mb()}))


def own_peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


if __name__ == "__main__":
    main()
