"""Random ``kill -9`` trials of reverse syncs: how many rows are wrong after the next run?

For each mode, every trial changes a random share of a 20,000-row mart, starts the sync in a
child process, kills it with SIGKILL after a random delay (anywhere from before the first write
to after the commit), then moves the mart again (so that whatever the killed run left is stale)
and runs the sync once more. It then compares the destination with the mart, row by row, and
counts the rows that differ. The promise is 0.

    .venv/bin/python scripts/crash_trials.py --trials 20            # every mode
    .venv/bin/python scripts/crash_trials.py --trials 5 --modes redis_mirror

Runs against throwaway servers (or ROUNDTRIP_POSTGRES_URL / ROUNDTRIP_REDIS_URL). The figures
of a run are in docs/reverse_etl.md ("How the guarantees are tested").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reverse_etl.engine import Connections, RunOptions, run_sync  # noqa: E402
from reverse_etl.spec import ModelRef, SyncSettings, SyncSpec  # noqa: E402
from roundtrip.dev.services import postgres_server, redis_server  # noqa: E402

ROWS = 20_000
MODES = {
    "postgres_upsert": dict(destination="postgres", target="crm.trial_upsert", mode="upsert"),
    "postgres_mirror": dict(destination="postgres", target="crm.trial_mirror", mode="mirror"),
    "postgres_insert_only": dict(destination="postgres", target="crm.trial_insert_only", mode="insert_only"),
    "postgres_replace": dict(destination="postgres", mode="replace"),
    "redis_upsert": dict(destination="redis", target="trial_u:{user_id}", mode="upsert", ttl_seconds=86_400),
    "redis_mirror": dict(destination="redis", target="trial_m:{user_id}", mode="mirror"),
    "redis_insert_only": dict(destination="redis", target="trial_i:{user_id}", mode="insert_only"),
}


def spec_for(name: str) -> SyncSpec:
    settings = SyncSettings(
        primary_key=["user_id"], batch_rows=1_000, max_delete_pct=100, retry={"attempts": 1}, **MODES[name]
    )
    table = f"trial_{name}"
    return SyncSpec(
        name=f"trial_{name}",
        model=table,
        relation=f"marts.{table}",
        settings=settings,
        target=settings.target or f"marts.{table}",
        source=ModelRef(database="warehouse", schema="marts", identifier=table, relation=f"marts.{table}"),
    )


def build(warehouse: Path, table: str, version: int, keep: float) -> None:
    """The mart at ``version``: a random ``keep`` share of users, each with values of that version."""
    con = duckdb.connect(str(warehouse))
    try:
        con.execute("create schema if not exists marts")
        con.execute(
            f"""create or replace table marts.{table} as
                select i::bigint as user_id, 'user' || i || '@example.com' as email,
                       (['regular', 'at_risk', 'high_value'])[1 + ((hash(i, {version}) % 3)::int)] as segment,
                       ((hash(i, {version}, 1) % 10000) / 100.0)::decimal(18, 2) as lifetime_value
                from range(1, {ROWS} + 1) t(i)
                where (hash(i, {version}, 2) % 1000) < {int(keep * 1000)}"""
        )
    finally:
        con.close()


def mart(warehouse: Path, table: str) -> dict[int, tuple[Any, ...]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {r[0]: tuple(r[1:]) for r in con.execute(f"select * from marts.{table}").fetchall()}
    finally:
        con.close()


def held(name: str, spec: SyncSpec, pg_url: str, rd_url: str) -> dict[int, tuple[Any, ...]]:
    if spec.settings.kind == "postgres":
        with psycopg.connect(pg_url) as conn:
            rows = conn.execute(f"select user_id, email, segment, lifetime_value from {spec.target}").fetchall()
        return {r[0]: tuple(r[1:]) for r in rows}
    client = redis.Redis.from_url(rd_url)
    prefix = spec.target.split("{")[0]
    out = {}
    for key in client.scan_iter(prefix + "*", count=10_000):
        value = json.loads(client.get(key))
        out[value["user_id"]] = (value["email"], value["segment"], Decimal(str(value["lifetime_value"])))
    client.close()
    return out


def wrong_rows(spec: SyncSpec, truth: dict[int, tuple[Any, ...]], seen: dict[int, set[tuple[Any, ...]]],
               have: dict[int, tuple[Any, ...]]) -> int:  # fmt: skip
    """Rows that break the mode's promise. upsert: every mart row with the mart's values, other
    rows only keys the mart had once; mirror / replace: exactly the mart; insert_only: every
    mart key present, never updated (its value one the key had in a version that may have sent
    it first), nothing else but keys the mart had once."""
    mode = spec.settings.mode
    bad = 0
    for key, values in truth.items():
        if mode == "insert_only":
            bad += have.get(key) not in seen[key]
        elif have.get(key) != values:
            bad += 1
    extra = set(have) - set(truth)
    bad += len(extra) if mode in ("mirror", "replace") else len(extra - set(seen))
    return bad


CHILD = """
import sys
from reverse_etl.engine import Connections, RunOptions, run_sync
from reverse_etl.spec import SyncSpec
spec = SyncSpec.model_validate_json(sys.stdin.read())
run_sync(spec, Connections.of(sys.argv[1], sys.argv[2]), RunOptions())
"""


def trial_run(spec: SyncSpec, pg_url: str, rd_url: str, warehouse: Path, delay: float) -> bool:
    """The sync in a child, SIGKILLed after ``delay`` seconds; True when it died before ending."""
    env = {**os.environ, "ROUNDTRIP_DUCKDB_PATH": str(warehouse), "ROUNDTRIP_LOG_LEVEL": "ERROR"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, pg_url, rd_url], stdin=subprocess.PIPE, env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert child.stdin is not None
    child.stdin.write(spec.model_dump_json().encode())
    child.stdin.close()
    try:
        child.wait(delay)
        return False  # it ended before the kill
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
        child.wait(60)
        return True


def child_times(spec: SyncSpec, pg_url: str, rd_url: str, warehouse: Path) -> tuple[float, float]:
    """(seconds until a child has imported the engine, seconds of a whole child run)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import reverse_etl.engine"], cwd=ROOT, check=True)
    ready = time.perf_counter() - started
    started = time.perf_counter()
    trial_run(spec, pg_url, rd_url, warehouse, delay=3600)  # not killed: it ends first
    return ready, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated: {', '.join(MODES)}")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    names = [m for m in args.modes.split(",") if m]
    results = []
    with tempfile.TemporaryDirectory(prefix="crash-trials-") as tmp:
        warehouse = Path(tmp) / "warehouse.duckdb"
        os.environ["ROUNDTRIP_DUCKDB_PATH"] = str(warehouse)
        with postgres_server(Path(tmp)) as pg, redis_server(Path(tmp)) as rd:
            endpoints = Connections.of(pg.url(), rd.url())
            for name in names:
                spec = spec_for(name)
                table = spec.model
                version = 1
                build(warehouse, table, version, keep=0.9)
                assert run_sync(spec, endpoints, RunOptions()).error is None
                # kills land between the child's start (its imports) and its end, timed once
                ready, whole = child_times(spec, pg.url(), rd.url(), warehouse)
                # every value each key has had in a version some run may have sent (insert_only keeps the first)
                seen: dict[int, set[tuple[Any, ...]]] = {k: {v} for k, v in mart(warehouse, table).items()}
                delivered = set(seen)  # keys surely sent already: their value can no longer change
                killed = bad_total = 0
                for _ in range(args.trials):
                    for step in ("killed", "next"):
                        version += 1
                        build(warehouse, table, version, keep=rng.uniform(0.6, 1.0))
                        for key, values in mart(warehouse, table).items():
                            if key not in delivered:
                                seen.setdefault(key, set()).add(values)
                            seen.setdefault(key, {values})
                        if step == "killed":
                            delay = rng.uniform(ready, whole)
                            killed += trial_run(spec, pg.url(), rd.url(), warehouse, delay)
                    truth = mart(warehouse, table)  # what the killed run wrote is stale now
                    result = run_sync(spec, endpoints, RunOptions())
                    assert result.error is None, result.error
                    bad_total += wrong_rows(spec, truth, seen, held(name, spec, pg.url(), rd.url()))
                    delivered |= set(truth)
                results.append(
                    {"mode": name, "trials": args.trials, "killed mid-run": killed, "wrong rows after": bad_total}
                )
                print(json.dumps(results[-1]), flush=True)
    print()
    print(f"{'mode':24} {'trials':>6} {'killed mid-run':>15} {'wrong rows after':>17}")
    for r in results:
        print(f"{r['mode']:24} {r['trials']:>6} {r['killed mid-run']:>15} {r['wrong rows after']:>17}")
    if any(r["wrong rows after"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
