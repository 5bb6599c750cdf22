"""`make demo` end to end, small: the summary's numbers are the ones the systems hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import psycopg
import pytest
import redis

from roundtrip.dev.services import PostgresEndpoint, RedisEndpoint

SIZES = ["--users", "400", "--items", "150", "--orders", "4000", "--clicks", "9000", "--days", "12"]


def _demo(tmp_path: Path, extra_env: dict[str, str], *args: str, sizes: list[str] = SIZES, timeout: int = 600) -> dict:  # type: ignore[type-arg]
    """`roundtrip demo --json` as a user runs it (no ROUNDTRIP_* of ours), its report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUNDTRIP_")}
    env.update(
        {
            "ROUNDTRIP_DATA_DIR": str(tmp_path / "data"),
            "DBT_TARGET_PATH": str(tmp_path / "target"),
            "DBT_LOG_PATH": str(tmp_path / "logs"),
            **extra_env,
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "roundtrip", "demo", "--json", *sizes, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_demo_summary_matches_warehouse_postgres_and_redis(
    tmp_path: Path, pg_database: PostgresEndpoint, redis_endpoint: RedisEndpoint, redis_client: redis.Redis
) -> None:
    report = _demo(tmp_path, {"ROUNDTRIP_POSTGRES_URL": pg_database.url(), "ROUNDTRIP_REDIS_URL": redis_endpoint.url()})

    con = duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True)
    for layer in report["layers"]:
        actual = con.execute(f'select count(*) from "{layer["layer"]}"."{layer["table"]}"').fetchone()
        assert actual == (layer["rows"],), layer
    layers = {(x["layer"], x["table"]): x["rows"] for x in report["layers"]}
    assert layers[("bronze", "orders")] == report["generated"]["orders"]
    assert layers[("silver", "orders_clean")] == layers[("bronze", "orders")], "silver drops nothing"
    assert layers[("raw_app", "users")] == 400

    syncs = {s["sync"]: s for s in report["syncs"]}
    gmv = con.execute("select count(*), sum(gmv) from gold.daily_gmv_metrics").fetchone()
    with psycopg.connect(pg_database.url()) as conn:
        pushed = conn.execute("select count(*), sum(gmv) from reporting.daily_gmv_metrics").fetchone()
    assert pushed == gmv and syncs["reporting_daily_gmv"]["inserted"] == gmv[0]

    users_with_reco = con.execute("select count(distinct user_id) from marts.recommendations").fetchone()
    keys = list(redis_client.scan_iter(match="reco:*"))
    assert (len(keys),) == users_with_reco == (syncs["reco_cache"]["inserted"],)
    sample = json.loads(redis_client.get(keys[0]))
    assert [r["recommendation_rank"] for r in sample] == list(range(1, len(sample) + 1))
    assert 0 < redis_client.ttl(keys[0]) <= 86_400

    def warehouse_count(relation: str) -> int:
        row = con.execute(f"select count(*) from {relation}").fetchone()
        return int(row[0]) if row else 0

    with psycopg.connect(pg_database.url()) as conn:
        segments = conn.execute(
            "select user_id, segment from crm.user_segments where previous_segment is null order by 1"
        ).fetchall()
        queued = conn.execute("select trigger_id from crm.email_queue order by 1").fetchall()
        served = {
            mv: conn.execute(f"select count(*) from serving.{mv}").fetchone()[0]  # type: ignore[index]
            for mv in ("enriched_user_mv", "item_ids_mv", "iris_zones_mv", "recommendable_items_mv")
        }
    assert segments == con.execute("select user_id, segment from marts.user_segments order by 1").fetchall()
    assert queued == con.execute("select trigger_id from marts.email_triggers order by 1").fetchall()
    exported = {
        t: warehouse_count(f"marts.{t}")
        for t in ("enriched_user", "recommendable_items", "non_recommendable_items", "iris_zones")
    }
    assert served == {
        "enriched_user_mv": exported["enriched_user"],
        "item_ids_mv": exported["recommendable_items"] + exported["non_recommendable_items"],
        "iris_zones_mv": exported["iris_zones"],
        "recommendable_items_mv": exported["recommendable_items"],
    }
    # the demo's own syncs, checked one by one; a sync a project adds has its row too
    refreshed = {s["sync"]: s.get("refreshed", []) for s in report["syncs"] if s["mode"] == "replace"}
    assert (
        refreshed.items()
        >= {
            "serving_enriched_user": ["enriched_user_mv"],
            "serving_iris_zones": ["iris_zones_mv"],
            # item_ids_mv reads both item tables: one refresh after both swaps, owed by both syncs
            "serving_non_recommendable_items": ["item_ids_mv", "non_recommendable_items_mv"],
            "serving_recommendable_items": ["item_ids_mv", "recommendable_items_mv"],
        }.items()
    )

    held = {d["sync"]: d["rows or keys"] for d in report["destinations"]}
    assert set(held) == set(syncs)
    assert (
        held.items()
        >= {
            "reporting_daily_gmv": gmv[0],
            "reco_cache": len(keys),
            "crm_user_segments": len(segments),
            "crm_email_queue": len(queued),
            **{f"serving_{t}": n for t, n in exported.items()},
        }.items()
    )


@pytest.mark.slow
def test_demo_on_a_postgres_warehouse_and_throwaway_servers_leaves_none_running(tmp_path: Path) -> None:
    """`make demo TARGET=postgres`: loaders, dbt build and the syncs on a Postgres warehouse."""
    report = _demo(tmp_path, {}, "--target", "postgres")
    layers = {(x["layer"], x["table"]): x["rows"] for x in report["layers"]}
    assert layers[("bronze", "orders")] == report["generated"]["orders"]
    assert layers[("silver", "orders_clean")] == layers[("bronze", "orders")]
    assert ("serving", "item_ids_mv") in layers  # a real materialized view in the warehouse too
    syncs = {s["sync"]: s for s in report["syncs"]}
    assert all(s["status"] == "succeeded" and s["rejected"] == 0 for s in syncs.values())
    held = {d["sync"]: d["rows or keys"] for d in report["destinations"]}
    # what each destination holds is what its mart in the Postgres warehouse holds
    for sync, model in (
        ("crm_user_segments", "user_segments"),
        ("crm_email_queue", "email_triggers"),
        ("serving_enriched_user", "enriched_user"),
        ("reporting_daily_gmv", "daily_gmv_metrics"),
    ):
        layer = "gold" if model == "daily_gmv_metrics" else "marts"
        assert held[sync] == layers[(layer, model)] == syncs[sync]["inserted"], sync
    assert (tmp_path / "data" / "report-postgres.html").read_text().count("<svg") == 1
    assert not (tmp_path / "data" / "report.html").exists(), "the DuckDB demo's report is not overwritten"
    services = tmp_path / "data" / "services"
    leftovers = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(services) in cmdline or str(tmp_path) in cmdline:
                leftovers.append(cmdline)
    assert leftovers == []
    assert not any(services.iterdir()), "server folders removed"
