"""Faults from the world outside the sync: servers that lose or restore data, hand edits of the
destination and of the state, crafted names, values a destination cannot hold, a build beside
a sync. Each test asserts on what the destination holds afterwards, compared with the mart row
for row, and that ``roundtrip sync verify`` finds nothing left to repair.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
import redis

from reverse_etl.connections import Connections
from reverse_etl.engine import RunOptions, SyncResult, run_sync
from reverse_etl.results import RunOptions as Options
from reverse_etl.run import Verification
from reverse_etl.spec import SyncSettings, SyncSpec
from reverse_etl.state.registry import tables_of
from reverse_etl.verify import verify_sync
from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.core.settings import load_settings
from roundtrip.dev.services import LocalPostgres, LocalRedis

from .conftest import FIXTURE_PROJECT, Harness

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(autouse=True)
def _empty_redis(redis_client: redis.Redis) -> None:
    """Every test starts from an empty Redis database (the fixture flushes it)."""


# ---------------------------------------------------------------- helpers


def ok(result: SyncResult) -> SyncResult:
    assert result.error is None, result.error
    return result


def custom(h: Harness, base: str, name: str, model: str, **settings: Any) -> SyncSpec:
    """A sync like ``base`` under another name, reading ``model``, with other settings."""
    spec = h.specs[base]
    merged = SyncSettings.model_validate({**spec.settings.model_dump(exclude_none=True), **settings})
    assert spec.source is not None
    source = spec.source.model_copy(update={"identifier": model})
    target = merged.target or spec.target
    return spec.model_copy(
        update={"name": name, "model": model, "settings": merged, "source": source, "target": target}
    )


def mart(h: Harness, model: str, sql: str) -> set[tuple[Any, ...]]:
    con = duckdb.connect(str(h.warehouse), read_only=True)
    try:
        return {tuple(r) for r in con.execute(f"select * from ({sql.format(model=f'marts.{model}')})").fetchall()}
    finally:
        con.close()


def redis_json(h: Harness, pattern: str, client: redis.Redis | None = None) -> dict[str, Any]:
    client = client or redis.Redis.from_url(h.redis.url())
    return {k.decode(): json.loads(client.get(k)) for k in client.scan_iter(pattern, count=10_000)}


def verified(h: Harness, spec: SyncSpec, redis_url: str | None = None, pg_url: str | None = None) -> Verification:
    connections = Connections.of(pg_url or h.postgres.url(), redis_url or h.redis.url())
    return verify_sync(spec, connections, Options(dry_run=True, dbt_project_dir=FIXTURE_PROJECT))


def run(
    h: Harness, spec: SyncSpec, redis_url: str | None = None, pg_url: str | None = None, **options: Any
) -> SyncResult:
    connections = Connections.of(pg_url or h.postgres.url(), redis_url or h.redis.url())
    return run_sync(spec, connections, RunOptions(dbt_project_dir=FIXTURE_PROJECT, **options))


PROFILES = "select user_id, email, segment, lifetime_value, order_count from {model}"


def profiles(n: int, version: int = 1, dropped: int = 0) -> str:
    """``n`` users (the first ``dropped`` left out); ``version`` changes every third segment."""
    return f"""select i::integer as user_id, 'u' || i || '@example.com' as email,
                      case when i % 3 = 0 then 'v{version}' else 'regular' end as segment,
                      (i % 1000 + 0.25)::decimal(18, 2) as lifetime_value, (i % 7)::integer as order_count
               from range({dropped}, {n}) r(i)"""


def expected_profiles(h: Harness) -> dict[str, Any]:
    return {
        f"profile:{u}": {"user_id": u, "email": e, "segment": s, "lifetime_value": float(v), "order_count": n}
        for u, e, s, v, n in mart(h, "segments", PROFILES)
    }


def held_profiles(h: Harness, client: redis.Redis | None = None) -> dict[str, Any]:
    return {
        k: v | {"lifetime_value": float(v["lifetime_value"])} for k, v in redis_json(h, "profile:*", client).items()
    }


# ---------------------------------------------------------------- 1. Redis loses its keys


def test_a_flushed_redis_is_written_again_whole_by_the_next_run(harness: Harness, redis_client: redis.Redis) -> None:
    """120,000 keys in batches of 10,000: every lost key is written again in one run, not one
    batch per run."""
    spec = custom(harness, "profile_cache", "profile_cache", "segments", batch_rows=10_000)
    harness.model("segments", profiles(120_000))
    assert ok(run(harness, spec)).counts.inserted == 120_000
    redis_client.flushdb()
    healed = ok(run(harness, spec))
    assert (healed.counts.healed, healed.counts.unchanged, healed.counts.inserted) == (120_000, 0, 0)
    assert held_profiles(harness) == expected_profiles(harness)
    again = ok(run(harness, spec))
    assert (again.counts.healed, again.counts.unchanged) == (0, 120_000)
    assert verified(harness, spec).problems == 0


@pytest.fixture
def own_redis() -> Iterator[LocalRedis]:
    """A Redis of this test's own, to crash and restart (its folder under the test servers' own,
    not the test's tmp_path, which another pytest session may rotate away meanwhile)."""
    server = LocalRedis(load_settings().test_services_dir / "own-redis")
    server.start()
    yield server
    server.stop()


def test_a_redis_restarted_from_an_older_snapshot_or_empty_is_repaired(harness: Harness, own_redis: LocalRedis) -> None:
    """The snapshot (what a default redis.conf loads after a crash) is older than the last sync:
    stale values, and keys mirror had deleted since. The restarted server has another run_id:
    the next run reads every key back, rewrites what differs and deletes what it had deleted."""
    url = own_redis.endpoint.url()  # type: ignore[union-attr]
    spec = custom(harness, "reco", "reco_big", "recos", batch_rows=20_000)
    recos = "select (i // 2)::integer as user_id, (i % 50)::integer as item_id, ({score})::double as score, (i % 2 + 1)::integer as recommendation_rank from range({start}, 200000) r(i)"
    harness.model("recos", recos.format(score="0.5", start=0))
    assert ok(run(harness, spec, url)).counts.inserted == 100_000  # 100,000 keys of two rows each
    client = redis.Redis.from_url(url)
    client.save()  # the snapshot: as of this run
    changed = "case when i % 31 = 0 then 0.25 else 0.5 end"
    harness.model("recos", recos.format(score=changed, start=2_000))  # 1,000 keys dropped, ~3 % changed
    moved = ok(run(harness, spec, url))
    assert moved.counts.deleted == 1_000 and moved.counts.updated > 3_000
    own_redis.crash()
    own_redis.restart()  # loads the older snapshot
    client = redis.Redis.from_url(url)
    assert client.exists("reco:0") == 1  # a key mirror had deleted is back
    repaired = ok(run(harness, spec, url))
    assert repaired.counts.deleted == 1_000 and repaired.counts.healed == moved.counts.updated
    expected = expected_recos(harness)
    assert redis_json(harness, "reco:*", client) == expected
    assert writes(ok(run(harness, spec, url))) == 0

    own_redis.crash()
    (own_redis.folder / "dump.rdb").unlink()  # type: ignore[operator]
    own_redis.restart()  # no snapshot: empty
    empty = ok(run(harness, spec, url))
    assert empty.counts.healed == len(expected)
    assert redis_json(harness, "reco:*", redis.Redis.from_url(url)) == expected
    assert verified(harness, spec, url).problems == 0


def expected_recos(h: Harness) -> dict[str, Any]:
    out: dict[str, list[dict[str, Any]]] = {}
    rows = sorted(
        mart(h, "recos", "select user_id, item_id, score, recommendation_rank from {model}"), key=lambda r: (r[0], r[3])
    )
    for u, i, s, r in rows:
        out.setdefault(f"reco:{u}", []).append({"item_id": i, "score": float(s), "recommendation_rank": r})
    return out


def writes(result: SyncResult) -> int:
    c = result.counts
    return c.inserted + c.updated + c.deleted + c.healed


# ---------------------------------------------------------------- 2. crafted names


# an injection that fits Postgres' 63 bytes of a name (a longer target is refused as too long)
CRAFTED = "v\";call postgres_execute('rt_pg','drop table victim2');--"


def test_a_crafted_target_touches_only_its_own_table(harness: Harness) -> None:
    harness.sql(
        "create table public.victim (a int); create table public.victim2 (a int); insert into public.victim values (1)"
    )
    spec = custom(harness, "crm_segments", "crafted", "segments", target=f"public.{CRAFTED}", track_changes=None)
    harness.model("segments", profiles(10))
    ok(run(harness, spec))
    assert harness.sql("select count(*) from public.victim2") == [(0,)]  # still there
    assert harness.sql("select a from public.victim") == [(1,)]
    held = set(harness.sql(f'select user_id, email from public."{CRAFTED.replace(chr(34), chr(34) * 2)}"'))
    assert held == {(u, e) for u, e, *_ in mart(harness, "segments", PROFILES)}
    with pytest.raises(ValueError, match=r"schema\.table"):  # a dot more: not a target at all
        custom(harness, "crm_segments", "crafted2", "segments", target='public.x"; drop table public.victim2; --')


WEIRD = ['we"ird', "a;b", "c.d", "e f", "ünï 名"]


def test_names_with_quotes_semicolons_dots_spaces_and_unicode_round_trip(
    harness: Harness, redis_client: redis.Redis
) -> None:
    columns = ", ".join(f'i::integer + {n} as "{c.replace(chr(34), chr(34) * 2)}"' for n, c in enumerate(WEIRD))
    harness.model("weird", f"select i::integer as id, 'x' || i as label, {columns} from range(50) r(i)")
    pg_spec = custom(
        harness,
        "crm_segments",
        "weird pg",
        "weird",
        target='"sch.em""a"."ta ble;ü"',
        primary_key=["id"],
        track_changes=None,
    )
    redis_spec = custom(harness, "profile_cache", "weird redis", "weird", target='w;"{id}".ü', primary_key=["id"])
    assert ok(run(harness, pg_spec)).counts.inserted == 50
    assert ok(run(harness, redis_spec)).counts.inserted == 50
    quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in ["id", "label", *WEIRD])
    held = set(harness.sql(f'select {quoted} from "sch.em""a"."ta ble;ü"'))
    assert held == mart(harness, "weird", "select * from {model}")
    value = json.loads(redis_client.get('w;"7".ü'))
    assert value == {"id": 7, "label": "x7", **{c: 7 + n for n, c in enumerate(WEIRD)}}
    assert verified(harness, pg_spec).problems == 0 and verified(harness, redis_spec).problems == 0
    assert writes(ok(run(harness, pg_spec))) == 0 and writes(ok(run(harness, redis_spec))) == 0


# ---------------------------------------------------------------- 4. the state edited by hand

THINGS = "select shop_id, sku, title, price from {model}"


def things(n: int, dropped: int = 0, version: int = 1) -> str:
    return f"""select (i // 10)::integer as shop_id, 's' || (i % 10) as sku,
                      case when i % 4 = 0 then 'v{version}' else 'label' end as label, (i + 0.5)::decimal(10, 2) as price
               from range({dropped}, {n}) r(i)"""


def held_things(h: Harness) -> set[tuple[Any, ...]]:
    return set(h.sql("select shop_id, sku, title, price from shop.things"))


def expected_things(h: Harness) -> set[tuple[Any, ...]]:
    return mart(h, "things", "select shop_id, sku, label, price from {model}")


DAMAGE = {
    "runs truncated": "truncate reverse_etl.runs",
    "runs dropped": "drop table reverse_etl.runs cascade",
    "syncs truncated": "truncate reverse_etl.syncs",
    "schema dropped": "drop schema reverse_etl cascade",
    "log dropped": "drop table reverse_etl.{rows}",
    "doubt table dropped": "drop table reverse_etl.{doubt}",
    "version reset": "update reverse_etl.syncs set version = 0",
    "sync_schemas truncated": "truncate reverse_etl.sync_schemas",
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("sync", ["shop_things", "reco"])
def test_a_state_edited_by_hand_is_repaired_or_re_owned(harness: Harness, sync: str, damage: str) -> None:
    """Between two runs the mart drops 400 records and changes others, and a person damages the
    state: the next run still leaves the destination equal to the mart (mirror deletes the 400),
    says what it repaired, and later runs are quiet again."""
    spec = custom(harness, sync, sync, "things" if sync == "shop_things" else "recos", batch_rows=100)
    recos = "select i::integer as user_id, (i % 9)::integer as item_id, ({v})::double as score, 1 as recommendation_rank from range({d}, 1000) r(i)"
    if sync == "shop_things":
        harness.model("things", things(1000))
    else:
        harness.model("recos", recos.format(v="0.5", d=0))
    ok(run(harness, spec))
    ok(run(harness, spec))  # a second run: a history and a log with two versions
    if sync == "shop_things":
        harness.model("things", things(1000, dropped=400, version=2))
    else:
        harness.model("recos", recos.format(v="case when i % 5 = 0 then 0.25 else 0.5 end", d=400))
    rows, doubt = tables_of(sync)
    harness.sql(DAMAGE[damage].format(rows=f'"{rows}"', doubt=f'"{doubt}"'))
    after = ok(run(harness, spec))
    if damage not in (
        "doubt table dropped",
        "version reset",
        "sync_schemas truncated",
        "runs truncated",
        "runs dropped",
    ):
        assert after.repairs, "a repair is said"
    if sync == "shop_things":
        assert held_things(harness) == expected_things(harness)
    else:
        assert redis_json(harness, "reco:*") == expected_recos(harness)
    again = ok(run(harness, spec))
    assert writes(again) == 0, again.counts
    assert verified(harness, spec).problems == 0
    runs = harness.sql("select status from reverse_etl.runs where sync = %s order by run_id desc limit 2", (sync,))
    assert [r[0] for r in runs] == ["succeeded", "succeeded"]


def test_a_state_dropped_with_its_local_cache_is_adopted_on_request(harness: Harness, data_dir: Path) -> None:
    """No trace left of the sync's state, here or in the history: the run cannot tell rows it
    wrote from rows others did, so mirror deletes nothing and says so; ``--adopt`` takes over
    the table's rows and deletes those the model lacks."""
    spec = custom(harness, "shop_things", "shop_things", "things", batch_rows=100)
    harness.model("things", things(500))
    ok(run(harness, spec))
    harness.model("things", things(500, dropped=100))
    harness.sql("drop schema reverse_etl cascade")
    for cache in (data_dir / "reverse_etl").glob("*.duckdb"):
        cache.unlink()
    first = ok(run(harness, spec))
    assert first.counts.deleted == 0 and len(held_things(harness)) == 500
    report = verified(harness, spec)
    assert (report.extra, report.others) == (0, 100)  # not known to be its own
    harness.sql("drop schema reverse_etl cascade")
    adopted = ok(run(harness, spec, adopt=True))
    assert adopted.counts.deleted == 100 and any("re-owned 500" in r for r in adopted.repairs)
    assert held_things(harness) == expected_things(harness)


# ---------------------------------------------------------------- 5. the destination edited by hand


def test_rows_deleted_while_another_writer_inserted_as_many_come_back(harness: Harness) -> None:
    spec = custom(harness, "crm_segments", "crm_segments", "segments", track_changes=None)
    harness.model("segments", profiles(1000))
    ok(run(harness, spec))
    harness.sql("delete from crm.segments where user_id < 50")
    harness.sql(
        "insert into crm.segments (user_id, email, segment, lifetime_value, order_count) "
        "select 5000 + g, 'other@example.com', 'x', 1, 1 from generate_series(1, 50) g"
    )
    healed = ok(run(harness, spec))
    assert (healed.counts.healed, healed.counts.unchanged) == (50, 950)
    ours = set(
        harness.sql(
            "select user_id, email, segment, lifetime_value, order_count from crm.segments where user_id < 5000"
        )
    )
    assert ours == mart(harness, "segments", PROFILES)
    assert harness.sql("select count(*) from crm.segments where user_id > 5000") == [(50,)]  # not ours: kept
    assert writes(ok(run(harness, spec))) == 0


def test_a_narrowed_column_stops_the_run_and_widened_back_is_repaired(harness: Harness) -> None:
    spec = custom(harness, "crm_segments", "crm_segments", "segments", track_changes=None)
    harness.model("segments", "select i::integer as user_id, (i + 0.25)::double as score from range(300) r(i)")
    ok(run(harness, spec))
    harness.sql("alter table crm.segments alter column score type integer")  # rounds every value
    stopped = run(harness, spec)
    assert stopped.status == "failed" and "column score" in (stopped.error or "") and "rounded" in (stopped.error or "")
    assert stopped.hint and "alter column score" in stopped.hint
    harness.sql("alter table crm.segments alter column score type double precision")
    healed = ok(run(harness, spec))
    assert healed.counts.healed == 300
    assert set(harness.sql("select user_id, score from crm.segments")) == mart(
        harness, "segments", "select * from {model}"
    )
    assert writes(ok(run(harness, spec))) == 0


def test_hand_edited_redis_values_are_found_by_the_sample(harness: Harness, redis_client: redis.Redis) -> None:
    spec = custom(harness, "profile_cache", "profile_cache", "segments", verify_sample=100)
    harness.model("segments", profiles(1000))
    ok(run(harness, spec))
    for i in range(0, 1000, 3):  # a third of the keys edited by hand
        redis_client.set(f"profile:{i}", '{"edited": true}')
    found = ok(run(harness, spec))
    assert found.counts.healed == 334 and found.checked >= 1000  # the sample escalated to every key
    assert held_profiles(harness) == expected_profiles(harness)


# ---------------------------------------------------------------- 6. keys that render alike


def test_keys_that_render_alike_are_rejected_with_the_reason(harness: Harness, redis_client: redis.Redis) -> None:
    harness.model(
        "pairs",
        """select 'a' || i as a, 'b' || i as b, i::integer as n from range(1006) r(i)
           union all select 'x:y', 'z', 1 union all select 'x', 'y:z', 2""",
    )
    spec = custom(
        harness, "profile_cache", "pairs", "pairs", target="k:{a}:{b}", primary_key=["a", "b"], max_reject_pct=50
    )
    first = run(harness, spec)
    assert first.status == "succeeded_with_rejects"
    assert (first.counts.read, first.counts.inserted, first.counts.rejected) == (1008, 1006, 2)
    assert {r["reason"] for r in first.rejections} == {"key renders alike: k:x:y:z is rendered by 2 different keys"}
    assert not redis_client.exists("k:x:y:z")
    assert redis_json(harness, "k:*") == {f"k:a{i}:b{i}": {"a": f"a{i}", "b": f"b{i}", "n": i} for i in range(1006)}
    second = run(harness, spec)
    assert (second.counts.read, second.counts.unchanged, second.counts.rejected, writes(second)) == (1008, 1006, 2, 0)


# ---------------------------------------------------------------- 7. values a destination cannot hold


def test_values_postgres_cannot_hold_reject_their_row_only(harness: Harness) -> None:
    harness.model(
        "odd",
        """select i::integer as id, case when i = 7 then 'nul' || chr(0) || 'byte' else 'ok' || i end as label,
                   case when i = 8 then 170141183460469231731687303715884105727::hugeint
                        else 123456789012345678901234567890123456::hugeint + i end as big,
                   0.1234567890123456789012345678901234567::decimal(38, 37) + (i % 9)::decimal(38, 37) as precise,
                   case when i = 9 then 'nan'::double when i = 10 then 'inf'::double else i * 0.5 end as ratio
            from range(2001) r(i)""",
    )
    spec = custom(harness, "crm_segments", "odd", "odd", target="crm.odd", primary_key=["id"], track_changes=None)
    result = run(harness, spec)
    assert result.status == "succeeded_with_rejects" and result.counts.rejected == 2
    reasons = {r["key"]["id"]: r["reason"] for r in result.rejections}
    assert "NUL byte" in reasons[7] and "38 digits" in reasons[8]
    held = {r[0]: r[1:] for r in harness.sql("select id, label, big::text, precise::text, ratio from crm.odd")}
    assert len(held) == 1999 and 7 not in held and 8 not in held
    assert held[0][1] == "123456789012345678901234567890123456"  # every digit: not through a double
    assert held[3][2] == "3.1234567890123456789012345678901234567"
    assert str(held[9][3]) == "nan" and held[10][3] == float("inf")  # Postgres holds NaN and Infinity
    assert writes(run(harness, spec)) == 0


def test_nan_and_infinity_never_reach_redis_as_invalid_json(harness: Harness, redis_client: redis.Redis) -> None:
    harness.model(
        "floats",
        "select i::integer as user_id, case when i = 1 then 'nan'::double when i = 2 then '-inf'::double else i end as x from range(5) r(i)",
    )
    spec = custom(harness, "profile_cache", "floats", "floats", max_reject_pct=50)
    rejected = run(harness, spec)
    assert rejected.counts.rejected == 2 and {r["key"]["user_id"] for r in rejected.rejections} == {1, 2}
    assert {k.decode() for k in redis_client.keys("profile:*")} == {"profile:0", "profile:3", "profile:4"}
    as_null = custom(harness, "profile_cache", "floats_null", "floats", non_finite="null", target="null:{user_id}")
    ok(run(harness, as_null))
    assert [json.loads(redis_client.get(f"null:{i}")) for i in (1, 2, 3)] == [
        {"user_id": 1, "x": None},
        {"user_id": 2, "x": None},
        {"user_id": 3, "x": 3.0},
    ]


# ---------------------------------------------------------------- 8. the destination Postgres killed


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    """A Postgres of this test's own, to kill and restart: durable, as a real server is, so a
    commit it acknowledged survives the SIGKILL."""
    server = LocalPostgres(load_settings().test_services_dir / "own-postgres")
    server.durable = True
    server.start()
    yield server
    server.stop()


def test_the_postgres_killed_mid_sync_leaves_a_true_history_and_a_right_table(
    harness: Harness, own_postgres: LocalPostgres
) -> None:
    url = own_postgres.endpoint.url()  # type: ignore[union-attr]
    spec = custom(harness, "crm_segments", "crm_segments", "segments", track_changes=None)
    harness.model("segments", profiles(20_000))
    ok(run(harness, spec, pg_url=url))
    harness.model("segments", profiles(20_000, version=2))
    killed = threading.Event()

    def kill_once(sync: str, rows: int) -> None:
        if not killed.is_set():
            killed.set()
            own_postgres.crash()  # mid-transaction: the changed rows are staged, nothing applied

    failed = run(harness, spec, pg_url=url, on_rows=kill_once)
    assert failed.status == "failed" and failed.attempts == 3  # retried, then given up: the server is down
    own_postgres.restart()
    done = ok(run(harness, spec, pg_url=url))
    assert done.counts.updated == 20_000 // 3 + 1
    with psycopg.connect(url) as conn:
        held = set(
            conn.execute("select user_id, email, segment, lifetime_value, order_count from crm.segments").fetchall()
        )
        history = conn.execute(
            "select status, attempts, error is not null from reverse_etl.runs order by run_id"
        ).fetchall()
    assert held == mart(harness, "segments", PROFILES)
    assert [h[0] for h in history] == ["succeeded", "failed", "succeeded"]  # nothing left "running"
    assert history[1][1] == 3 and history[1][2]


def test_running_out_of_memory_is_a_result_not_a_traceback(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    from reverse_etl.records import Records

    def exhausted(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError()

    harness.model("segments", profiles(10))
    monkeypatch.setattr(Records, "classify", exhausted)
    result = run(harness, harness.specs["crm_segments"])
    assert result.status == "failed" and "out of memory" in (result.error or "")
    assert result.hint and "batch_rows" in result.hint
    assert harness.sql("select status from reverse_etl.runs") == [("failed",)]


# ---------------------------------------------------------------- 9. a `dbt build` beside a sync


def test_a_sync_does_not_hold_the_warehouse_while_it_writes(harness: Harness) -> None:
    harness.model("segments", profiles(1000))
    built: list[str] = []

    def build_meanwhile(sync: str, rows: int) -> None:  # what `dbt build` does to the file, from another process
        program = "import duckdb, sys; duckdb.connect(sys.argv[1]).execute('create or replace table marts.x as select 1 as x')"
        subprocess.run([sys.executable, "-c", program, str(harness.warehouse)], check=True, timeout=60)
        built.append(sync)

    ok(run(harness, harness.specs["crm_segments"], on_rows=build_meanwhile))
    assert built == ["crm_segments"]


def test_a_warehouse_held_by_a_build_is_waited_for(harness: Harness, tmp_path: Path) -> None:
    harness.model("segments", profiles(100))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(3)",
            str(harness.warehouse),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    waited = ok(run(harness, harness.specs["crm_segments"], wait=20))
    assert waited.counts.inserted == 100 and time.monotonic() - started > 1
    holder.wait(10)


# ---------------------------------------------------------------- roundtrip sync verify


def test_verify_reports_what_differs_and_repair_sends_exactly_that(harness: Harness, fixture_manifest: Path) -> None:
    harness.model("things", things(300))
    ok(harness.run("shop_things"))
    harness.sql("delete from shop.things where shop_id = 1")  # 10 rows missing
    harness.sql("update shop.things set title = 'hand' where shop_id = 2 and sku in ('s1', 's2')")  # 2 differ
    harness.sql("insert into shop.things (shop_id, sku, title, price) values (99, 'zz', 'app', 1)")  # not ours
    env = {"ROUNDTRIP_POSTGRES_URL": harness.postgres.url(), "ROUNDTRIP_REDIS_URL": harness.redis.url()}
    report = cli(harness, fixture_manifest, env, "verify", "--sync", "shop_things", "--json")
    assert report.returncode == 1, report.stderr
    found = json.loads(report.stdout.splitlines()[0])
    assert (found["checked"], found["missing"], found["differing"], found["extra"], found["not_ours"]) == (
        300,
        10,
        2,
        0,
        1,
    )
    differing = [s for s in found["sample"] if s["problem"] == "differs"]
    assert differing[0]["columns"] == ["title"]
    repaired = cli(harness, fixture_manifest, env, "verify", "--sync", "shop_things", "--repair", "--json")
    assert repaired.returncode == 0, repaired.stderr
    lines = [json.loads(line) for line in repaired.stdout.splitlines()]
    assert lines[0]["missing"] == lines[0]["differing"] == 0
    assert lines[1]["repair"] and lines[1]["healed"] == 12
    assert held_things(harness) - {(99, "zz", "app", Decimal(1))} == expected_things(harness)


def cli(h: Harness, manifest: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    import os

    full = {**os.environ, "ROUNDTRIP_DUCKDB_PATH": str(h.warehouse), "DBT_TARGET_PATH": str(manifest.parent), **env}
    return subprocess.run(
        [sys.executable, "-m", "reverse_etl", *args],
        env=full,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_digest_a_run_records_is_the_one_of_the_table(harness: Harness) -> None:
    """After runs that insert, update and delete, the digest kept in the state (updated from
    the rows each run touched, not by a scan) equals the digest Postgres computes of the table
    (the next run compares them to find hand edits)."""
    spec = custom(harness, "shop_things", "shop_things", "things", batch_rows=100)
    fresh = (
        "select count(*) || ':' || coalesce(bit_xor(hash_record_extended(row(shop_id, sku, title, price), 0)), 0) "
        "from shop.things"
    )
    for n, dropped, version in ((600, 0, 1), (600, 0, 2), (650, 100, 2), (650, 100, 3)):
        harness.model("things", things(n, dropped=dropped, version=version))
        ok(run(harness, spec, verify_sample=0))
        kept = harness.sql("select digest from reverse_etl.syncs where sync = 'shop_things'")
        assert kept == harness.sql(fresh)
    assert held_things(harness) == expected_things(harness)
