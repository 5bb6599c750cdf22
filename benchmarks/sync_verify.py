"""The cost of checking a destination: ``roundtrip sync verify`` and each run's ``verify_sample``.

On the same model rows and servers, after a first sync into Postgres and into Redis:
- an unchanged re-sync with ``verify_sample: 0`` (the baseline: the digest of the Postgres
  table, or the server's identity, and the TTL renewal of every Redis key);
- the same re-sync with the default sample (100 records read back) and with 10,000;
- ``verify``: every record of the model read back and compared, column by column (Postgres) or
  value and TTL (Redis), against the first sync's time.
"""

from __future__ import annotations

import functools

import psycopg
import redis

from benchmarks.core import Context, Result, environment, human, timed
from benchmarks.sync_data import build_model, forget_state, postgres_spec, redis_spec
from reverse_etl.engine import Connections, RunOptions, run_sync
from reverse_etl.spec import SyncSpec
from reverse_etl.verify import verify_sync

NAME = "sync_verify"
TABLE = "crm.bench_verify"


def synced(spec: SyncSpec, connections: Connections, **options: object) -> None:
    result = run_sync(spec, connections, RunOptions(**options))  # type: ignore[arg-type]
    if not result.ok or result.counts.healed:
        raise RuntimeError(f"sync {spec.name}: {result.status} {result.error or ''} {result.counts}")


def run(ctx: Context) -> list[Result]:
    n = ctx.size
    pg, rd = ctx.postgres(), ctx.redis()
    warehouse = ctx.path(NAME) / "warehouse.duckdb"
    build_model(warehouse, n)
    connections = Connections.of(pg.url(), rd.url())
    results: list[Result] = []
    with environment(ROUNDTRIP_DUCKDB_PATH=str(warehouse)):
        for kind, spec in (
            ("Postgres", postgres_spec("bench_verify_pg", TABLE)),
            ("Redis", redis_spec("bench_verify_redis", "verify:{user_id}")),
        ):
            forget_state(pg.url(), spec.name)
            with psycopg.connect(pg.url(), autocommit=True) as conn:
                conn.execute(f"drop table if exists {TABLE}")
            redis.Redis.from_url(rd.url()).flushdb()
            first, _ = timed(lambda: synced(spec, connections, verify_sample=0))  # noqa: B023
            seconds: dict[str, list[float]] = {"sample 0": [], "sample 100": [], "sample 10000": [], "verify": []}
            for _ in range(ctx.repeat):
                for sample in (0, 100, 10_000):
                    took, _ = timed(functools.partial(synced, spec, connections, verify_sample=sample))
                    seconds[f"sample {sample}"].append(took)
                took, report = timed(
                    lambda: verify_sync(spec, connections, RunOptions(dry_run=True))  # noqa: B023
                )
                if report.problems:
                    raise RuntimeError(f"verify {spec.name}: {report.as_dict()}")
                seconds["verify"].append(took)
            best = {k: min(v) for k, v in seconds.items()}
            details = {"seconds": seconds, "first_sync": first, "rows": n}
            results += [
                Result(NAME, f"{kind}: seconds, unchanged re-sync of {human(n)} reading 100 records back",
                       best["sample 100"], "s", best["sample 0"], "the same re-sync reading none back",
                       "<= 1.2", details=details),
                Result(NAME, f"{kind}: seconds, unchanged re-sync of {human(n)} reading 10,000 records back",
                       best["sample 10000"], "s", best["sample 0"], "the same re-sync reading none back"),
                Result(NAME, f"{kind}: seconds, sync verify of {human(n)} records (all read back)",
                       best["verify"], "s", first, "the first sync of the same rows",
                       note="every record compared with the mart"),
            ]  # fmt: skip
    return results
