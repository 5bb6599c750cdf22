"""reverse_etl never out of step with its destinations, and never leaking a secret.

The promise, for every mode and destination: after any run that ends (succeeded, failed or
killed with ``kill -9``), the next successful run leaves the destination equal to the mart (the
rows the sync owns), with true counts. Every test below asserts on what the destination holds
afterwards, read from Postgres or Redis themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from reverse_etl.engine import Connections, RunOptions, SyncResult, run_sync
from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.dev.services import LocalPostgres, LocalRedis, PostgresEndpoint, RedisEndpoint, free_port

from .conftest import Harness

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SEGMENTS = "t(user_id, email, segment, lifetime_value, order_count)"
THINGS = "t(shop_id, sku, label, price)"
ITEMS = "t(item_id, title, price)"
RECOS = "t(user_id, item_id, score, recommendation_rank)"


@pytest.fixture(autouse=True)
def _empty_redis(redis_client: redis.Redis) -> None:
    """Every test starts from an empty Redis database (the fixture flushes it)."""


def segments(*rows: tuple[int, str, str, str]) -> str:
    values = ", ".join(f"({u}, '{e}', '{s}', {v}::decimal(18, 2), 1)" for u, e, s, v in rows)
    return f"select * from (values {values}) {SEGMENTS}"


def things(*rows: tuple[int, str, str, str]) -> str:
    values = ", ".join(f"({s}, '{k}', '{label}', {p}::decimal(10, 2))" for s, k, label, p in rows)
    return f"select * from (values {values}) {THINGS}"


def items(*rows: tuple[int, str, str]) -> str:
    values = ", ".join(f"({i}, '{t}', {p}::decimal(10, 2))" for i, t, p in rows)
    return f"select * from (values {values}) {ITEMS}"


def recos(*rows: tuple[int, int, float, int]) -> str:
    values = ", ".join(f"({u}, {i}, {s}::double, {r})" for u, i, s, r in rows)
    return f"select * from (values {values}) {RECOS}"


# ---------------------------------------------------------------- what the destinations hold


def warehouse_rows(h: Harness, model: str, columns: str) -> set[tuple[Any, ...]]:
    import duckdb

    con = duckdb.connect(str(h.warehouse), read_only=True)
    try:
        return {tuple(r) for r in con.execute(f"select {columns} from marts.{model}").fetchall()}
    finally:
        con.close()


def pg_rows(h: Harness, table: str, columns: str) -> set[tuple[Any, ...]]:
    return set(h.sql(f"select {columns} from {table}"))


def redis_values(h: Harness, pattern: str) -> dict[str, Any]:
    client = redis.Redis.from_url(h.redis.url())
    try:
        return {k.decode(): json.loads(client.get(k), parse_float=Decimal) for k in client.scan_iter(pattern)}
    finally:
        client.close()


def expected_profiles(h: Harness) -> dict[str, Any]:
    return {
        f"profile:{u}": {"user_id": u, "email": e, "segment": s, "lifetime_value": v, "order_count": n}
        for u, e, s, v, n in warehouse_rows(h, "segments", "user_id, email, segment, lifetime_value, order_count")
    }


def expected_recos(h: Harness) -> dict[str, Any]:
    out: dict[str, list[dict[str, Any]]] = {}
    for u, i, s, r in sorted(
        warehouse_rows(h, "recos", "user_id, item_id, score, recommendation_rank"), key=lambda x: (x[0], x[3])
    ):
        out.setdefault(f"reco:{u}", []).append({"item_id": i, "score": Decimal(str(s)), "recommendation_rank": r})
    return out


UPSERTS = ("crm_segments", "profile_cache")  # an upsert keeps what the model dropped; mirror and replace do not


def upserted(held: set[tuple[Any, ...]], mart: set[tuple[Any, ...]], dropped: set[Any]) -> bool:
    """The mart's rows are there with the mart's values; any other row is one the model dropped."""
    keys = {row[0] for row in mart}
    return {row for row in held if row[0] in keys} == mart and {row[0] for row in held} - keys <= dropped


def destination_equals_mart(h: Harness, sync: str, dropped: set[Any] = frozenset()) -> None:  # type: ignore[assignment]
    """The sync's destination holds exactly the mart (the rows the sync owns); for an upsert,
    plus rows of keys the model has dropped since they were written (``dropped``)."""
    if sync == "crm_segments":
        cols = "user_id, email, segment, lifetime_value"
        assert upserted(pg_rows(h, "crm.segments", cols), warehouse_rows(h, "segments", cols), dropped)
    elif sync == "shop_things":
        assert pg_rows(h, "shop.things", "shop_id, sku, title, price") == warehouse_rows(
            h, "things", "shop_id, sku, label, price"
        )
    elif sync == "serving_items":
        cols = "item_id, title, price"
        assert pg_rows(h, "marts.items_export", cols) == warehouse_rows(h, "items_export", cols)
    elif sync == "profile_cache":
        held = {(k, json.dumps(v, sort_keys=True, default=str)) for k, v in redis_values(h, "profile:*").items()}
        mart = {(k, json.dumps(v, sort_keys=True, default=str)) for k, v in expected_profiles(h).items()}
        assert upserted(held, mart, {f"profile:{d}" for d in dropped})
    elif sync == "reco":
        assert redis_values(h, "reco:*") == expected_recos(h)
    else:
        raise AssertionError(sync)


def ok(result: SyncResult) -> SyncResult:
    assert result.error is None, result.error
    return result


def writes(result: SyncResult) -> int:
    c = result.counts
    return c.inserted + c.updated + c.deleted + c.healed


# ---------------------------------------------------------------- kill -9 at each phase boundary

# (sync, the model it reads, three versions of the mart: before, the crashed run's, after)
SCENARIOS: dict[str, tuple[str, str, str, str]] = {
    "crm_segments": (
        "segments",
        segments((1, "a@x", "regular", "1.00"), (2, "b@x", "regular", "2.00")),
        segments((1, "a@x", "at_risk", "1.50"), (3, "c@x", "new_user", "0.00")),
        segments((1, "a@x", "regular", "1.00"), (2, "b@x", "regular", "2.00")),  # back to the first
    ),
    "shop_things": (
        "things",
        things((1, "a", "A", "1.5"), (1, "b", "B", "2.5"), (2, "a", "C", "3.5")),
        things((1, "a", "A2", "1.5"), (2, "b", "D", "4.5"), (2, "c", "E", "5.5")),
        things((1, "a", "A", "1.5"), (1, "b", "B", "2.5"), (2, "a", "C", "3.5")),
    ),
    "serving_items": (
        "items_export",
        items((1, "lamp", "10.00"), (2, "desk", "99.00"), (3, "chair", "45.50")),
        items((1, "lamp", "12.00"), (3, "chair", "45.50"), (4, "rug", "30.00")),
        items((1, "lamp", "10.00"), (2, "desk", "99.00"), (3, "chair", "45.50")),
    ),
    "profile_cache": (
        "segments",
        segments((1, "a@x", "regular", "1.00"), (2, "b@x", "regular", "2.00")),
        segments((1, "a@x", "at_risk", "1.50"), (3, "c@x", "new_user", "0.00")),
        segments((1, "a@x", "regular", "1.00"), (2, "b@x", "regular", "2.00")),
    ),
    "reco": (
        "recos",
        recos((1, 10, 0.5, 1), (1, 11, 0.25, 2), (2, 12, 0.75, 1), (3, 13, 1.0, 1)),
        recos((1, 10, 0.5, 1), (1, 14, 0.125, 2), (2, 12, 0.5, 1), (4, 15, 1.0, 1)),
        recos((1, 10, 0.5, 1), (1, 11, 0.25, 2), (2, 12, 0.75, 1), (3, 13, 1.0, 1)),
    ),
}
POSTGRES_PHASES = ("classified", "first_batch", "written", "committed")
REDIS_PHASES = ("classified", "marked", "first_batch", "written", "committed")
CASES = [
    (sync, phase)
    for sync in SCENARIOS
    for phase in (REDIS_PHASES if sync in ("profile_cache", "reco") else POSTGRES_PHASES)
]


def run_killed(h: Harness, manifest: Path, sync: str, phase: str) -> subprocess.CompletedProcess[str]:
    """Run ``sync`` in a child that kills itself with SIGKILL when it reaches ``phase``."""
    spec = h.specs[sync]
    if spec.mode == "replace":
        spec = spec.model_copy(update={"refresh": []})  # the refresh is its own phase (test_replace.py)
    program = (
        "import sys\n"
        "from reverse_etl.engine import Connections, RunOptions, run_sync\n"
        "from reverse_etl.spec import SyncSpec\n"
        "spec = SyncSpec.model_validate_json(sys.stdin.read())\n"
        f"run_sync(spec, Connections.of({h.postgres.url()!r}, {h.redis.url()!r}), RunOptions())\n"
    )
    env = {**os.environ, "ROUNDTRIP_DUCKDB_PATH": str(h.warehouse), "ROUNDTRIP_TEST_CRASH_AT": phase}
    return subprocess.run(
        [sys.executable, "-c", program], input=spec.model_dump_json(), env=env, cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(("sync", "phase"), CASES, ids=[f"{s}-{p}" for s, p in CASES])
def test_a_kill_at_any_phase_leaves_nothing_wrong_after_the_next_run(
    harness: Harness, fixture_manifest: Path, sync: str, phase: str
) -> None:
    model, before, crashed, after = SCENARIOS[sync]
    spec = harness.specs[sync]
    if spec.mode == "replace":
        harness.specs[sync] = spec.model_copy(update={"refresh": []})
    harness.model(model, before)
    ok(harness.run(sync))
    destination_equals_mart(harness, sync)

    harness.model(model, crashed)
    killed = run_killed(harness, fixture_manifest, sync, phase)
    assert killed.returncode == -9, killed.stderr[-2000:]  # it really died at that point

    harness.model(model, after)  # the mart goes back: whatever the killed run wrote is now wrong
    dropped = {3} if sync in UPSERTS else set()  # user 3 was only in the killed run's mart
    recovered = ok(harness.run(sync))
    destination_equals_mart(harness, sync, dropped)
    again = ok(harness.run(sync))
    assert writes(again) == 0  # and the state now matches what the destination holds
    destination_equals_mart(harness, sync, dropped)

    history = harness.sql("select run_id, status, inserted from reverse_etl.runs order by run_id")
    killed_run = history[1]
    if phase == "committed":  # its commit recorded the run with its counts: never abandoned
        assert killed_run[1] in ("succeeded", "committed") and killed_run[2] is not None
    else:
        assert killed_run[1] == "abandoned"
    assert history[2][0] == recovered.run_id and history[2][1] == "succeeded"


def test_insert_only_redis_never_resends_across_a_kill(harness: Harness, fixture_manifest: Path) -> None:
    harness.model("segments", segments((1, "a@x", "regular", "1.00")))
    ok(harness.run("first_touch"))
    harness.model("segments", segments((1, "a@x", "at_risk", "1.00"), (2, "b@x", "new_user", "2.00")))
    assert run_killed(harness, fixture_manifest, "first_touch", "written").returncode == -9
    resumed = ok(harness.run("first_touch"))
    assert (resumed.counts.inserted, resumed.counts.unchanged) == (0, 2)  # SET NX: 2 is there already
    assert redis_values(harness, "first:*") == {
        "first:1": {"user_id": 1, "segment": "regular"},  # never updated: the first value stays
        "first:2": {"user_id": 2, "segment": "new_user"},
    }


def test_a_first_state_cache_counts_only_once_its_commit_is_in(
    harness: Harness, fixture_manifest: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync's first state is written to a cache file of its own beside the Redis writes; it
    replaces the cache only after the commit. Killed before the commit, or with a commit that
    fails, the next run must not classify against it: it sends every record again."""
    model, before, _, _ = SCENARIOS["profile_cache"]
    harness.model(model, before)
    caches = data_dir / "reverse_etl"
    assert run_killed(harness, fixture_manifest, "profile_cache", "written").returncode == -9
    assert not [p for p in caches.glob("*.duckdb") if ".next." not in p.name]  # nothing in place

    from reverse_etl.pg import PgSession

    def failing_commit(self: PgSession) -> None:
        raise RuntimeError("the commit did not come through")

    with monkeypatch.context() as patched:
        patched.setattr(PgSession, "commit", failing_commit)
        failed = harness.run("profile_cache")
    assert failed.status == "failed" and not list(caches.glob("*.duckdb"))  # the prepared file is gone too
    # and Postgres has no state either
    assert harness.sql("select count(*) from reverse_etl.syncs where sync = 'profile_cache'") == [(0,)]

    first = ok(harness.run("profile_cache"))
    assert first.counts.inserted == 2  # nothing was trusted: both keys sent
    cached = [p.name for p in caches.glob("*.duckdb")]
    assert len(cached) == 1 and ".next." not in cached[0]  # the prepared file became the cache
    destination_equals_mart(harness, "profile_cache")
    assert writes(ok(harness.run("profile_cache"))) == 0  # the cache now in place holds what was sent


# ---------------------------------------------------------------- drift


def test_a_dropped_truncated_or_pruned_table_is_healed(harness: Harness) -> None:
    harness.model(
        "segments", segments((1, "a@x", "regular", "1.00"), (2, "b@x", "regular", "2.00"), (3, "c@x", "x", "3"))
    )
    ok(harness.run("crm_segments"))

    harness.sql("drop table crm.segments")
    dropped = ok(harness.run("crm_segments"))
    assert (dropped.counts.healed, dropped.counts.inserted, dropped.counts.unchanged) == (3, 0, 0)
    destination_equals_mart(harness, "crm_segments")
    assert harness.sql("select count(*) from pg_index where indrelid = 'crm.segments'::regclass and indisprimary") == [
        (1,)
    ]

    harness.sql("delete from crm.segments where user_id = 2")
    pruned = ok(harness.run("crm_segments"))
    assert (pruned.counts.healed, pruned.counts.unchanged) == (1, 2)
    destination_equals_mart(harness, "crm_segments")

    harness.sql("truncate crm.segments")
    harness.model(
        "segments", segments((1, "a@x", "at_risk", "1.00"), (2, "b@x", "regular", "2.00"), (3, "c@x", "x", "3"))
    )
    truncated = ok(harness.run("crm_segments"))
    assert (truncated.counts.healed, truncated.counts.updated) == (3, 0)  # a changed record that was lost: healed
    destination_equals_mart(harness, "crm_segments")
    assert writes(ok(harness.run("crm_segments"))) == 0


def test_a_replace_table_dropped_by_hand_comes_back_whole(harness: Harness) -> None:
    harness.specs["serving_items"] = harness.specs["serving_items"].model_copy(update={"refresh": []})
    harness.model("items_export", items((1, "lamp", "10.00"), (2, "desk", "99.00")))
    ok(harness.run("serving_items"))
    harness.sql("drop table marts.items_export cascade")
    healed = ok(harness.run("serving_items"))
    assert healed.counts.healed == 2
    destination_equals_mart(harness, "serving_items")
    harness.sql("truncate marts.items_export")
    assert ok(harness.run("serving_items")).counts.healed == 2
    destination_equals_mart(harness, "serving_items")


def test_insert_only_does_not_resend_what_the_app_consumed(harness: Harness) -> None:
    triggers = "t(trigger_id, user_id, trigger_type, payload)"
    harness.model(
        "triggers", f"select * from (values ('t1', 1, 'welcome', '{{}}'), ('t2', 2, 'welcome', '{{}}')) {triggers}"
    )
    ok(harness.run("queue_a"))
    harness.sql("delete from crm.email_queue where trigger_id = 't1'")  # the app sent it and removed it
    again = ok(harness.run("queue_a"))
    assert (again.counts.inserted, again.counts.healed) == (0, 0)
    assert harness.sql("select trigger_id from crm.email_queue") == [("t2",)]


def test_a_row_changed_by_hand_is_found_and_written_again(harness: Harness) -> None:
    """Postgres: the digest of the table no longer matches the one the last commit recorded, so
    the run reads it back and rewrites the row; Redis: the keys read back each run (a sample)
    find the value edited by hand. ``--full-resync`` still sends everything."""
    harness.model("segments", segments((1, "a@x", "regular", "1.00"), (2, "b@x", "regular", "2.00")))
    ok(harness.run("crm_segments"))
    harness.sql("update crm.segments set segment = 'hand-edited' where user_id = 1")
    found = ok(harness.run("crm_segments"))
    assert (found.counts.healed, found.counts.unchanged) == (1, 1)
    destination_equals_mart(harness, "crm_segments")
    assert writes(ok(harness.run("crm_segments"))) == 0
    resync = ok(harness.run("crm_segments", full_resync=True))
    assert (resync.counts.updated, resync.counts.unchanged) == (0, 2)  # sent both, both already right

    harness.model("recos", recos((1, 10, 0.5, 1)))
    ok(harness.run("reco"))
    client = redis.Redis.from_url(harness.redis.url())
    client.set("reco:1", "[]", ex=100)
    assert ok(harness.run("reco")).counts.healed == 1
    destination_equals_mart(harness, "reco")
    client.close()


# ---------------------------------------------------------------- schema changes


def test_a_removed_column_fails_by_default_and_writes_nothing(harness: Harness) -> None:
    harness.model("segments", segments((1, "a@x", "regular", "1.00")))
    ok(harness.run("crm_segments"))
    harness.model(
        "segments", "select user_id, email, segment, order_count from (" + segments((1, "b@x", "regular", "1")) + ")"
    )
    failed = harness.run("crm_segments")
    assert failed.status == "failed" and "removed lifetime_value" in (failed.error or "")
    assert failed.hint and "on_schema_change" in failed.hint
    assert harness.sql("select email, lifetime_value from crm.segments") == [("a@x", Decimal("1.00"))]


@pytest.mark.parametrize("policy", ["append_new_columns", "sync_all_columns"])
def test_schema_changes_follow_on_schema_change(harness: Harness, policy: str) -> None:
    spec = harness.specs["crm_segments"]
    spec = spec.model_copy(update={"settings": spec.settings.model_copy(update={"on_schema_change": policy})})
    harness.model("segments", segments((1, "a@x", "regular", "1.00"), (2, "b@x", "regular", "2.00")))
    ok(harness.run(spec))
    changed = (
        "select user_id, email, segment, order_count, 'fr' as locale from ("
        + segments((1, "a@x", "regular", "1.00"), (2, "b@x", "regular", "2.00"))
        + ")"
    )
    harness.model("segments", changed)
    done = ok(harness.run(spec))
    assert done.counts.updated == 2  # every record's content changed with its columns
    columns = {
        r[0]
        for r in harness.sql(
            "select column_name from information_schema.columns where table_name = 'segments' and table_schema = 'crm'"
        )
    }
    assert "locale" in columns
    assert set(harness.sql("select user_id, locale from crm.segments")) == {(1, "fr"), (2, "fr")}
    if policy == "sync_all_columns":
        assert "lifetime_value" not in columns
    else:  # kept, but never stale: NULL in every row this sync owns
        assert harness.sql("select count(*) from crm.segments where lifetime_value is not null") == [(0,)]
    assert writes(ok(harness.run(spec))) == 0


def test_a_redis_value_losing_a_column_fails_by_default(harness: Harness) -> None:
    harness.model("segments", segments((1, "a@x", "regular", "1.00")))
    ok(harness.run("profile_cache"))
    harness.model("segments", "select user_id, email, segment from (" + segments((1, "a@x", "vip", "1")) + ")")
    failed = harness.run("profile_cache")
    assert failed.status == "failed" and "removed lifetime_value, order_count" in (failed.error or "")
    assert redis_values(harness, "profile:*")["profile:1"]["segment"] == "regular"


# ---------------------------------------------------------------- guards


def test_a_mart_emptied_upstream_does_not_empty_the_destination(harness: Harness) -> None:
    harness.specs["serving_items"] = harness.specs["serving_items"].model_copy(update={"refresh": []})
    harness.model("items_export", items((1, "lamp", "10.00"), (2, "desk", "99.00"), (3, "chair", "45.50")))
    ok(harness.run("serving_items"))
    harness.model("items_export", "select * from (" + items((1, "lamp", "10.00")) + ") where false")
    blocked = harness.run("serving_items")
    assert blocked.status == "blocked" and "max_delete_pct 50" in (blocked.error or "")
    assert harness.sql("select count(*) from marts.items_export") == [(3,)]
    assert harness.sql("select status from reverse_etl.runs where run_id = %s", (blocked.run_id,)) == [("blocked",)]
    forced = ok(harness.run("serving_items", max_delete_pct=100))
    assert forced.counts.deleted == 3 and harness.sql("select count(*) from marts.items_export") == [(0,)]


def test_too_many_rejected_rows_stop_the_run(harness: Harness) -> None:
    rows = "select * from (values (1, 'a@x', 's', 1.00::decimal(18, 2), 1), (null, 'b@x', 's', 2.00, 1)) " + SEGMENTS
    harness.model("segments", rows)
    blocked = harness.run("profile_cache")
    assert blocked.status == "blocked" and "max_reject_pct 10" in (blocked.error or "")
    assert redis_values(harness, "profile:*") == {}


# ---------------------------------------------------------------- secrets and failures

PG_PASSWORD, REDIS_PASSWORD = "pw-Sekr3t-9f2", "rd-Sekr3t-7c4"


@pytest.fixture(scope="module")
def secure_servers(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A Postgres that wants a password from `syncer` and a Redis that wants one from everybody."""
    folder = tmp_path_factory.mktemp("secure")
    pg, rd = LocalPostgres(folder), LocalRedis(folder)
    try:
        pg.start()
        syncer = pg.add_password_role("syncer", PG_PASSWORD)
        limited = pg.add_password_role("limited", PG_PASSWORD, connection_limit=1)
        rd.start()
        redis_endpoint = rd.require_password(REDIS_PASSWORD)
        yield pg, syncer, limited, redis_endpoint
    finally:
        rd.stop()
        pg.stop()


def no_secret(*texts: object) -> None:
    for text in texts:
        assert PG_PASSWORD not in str(text) and REDIS_PASSWORD not in str(text), text


def cli_run(h: Harness, manifest: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "ROUNDTRIP_DUCKDB_PATH": str(h.warehouse), "DBT_TARGET_PATH": str(manifest.parent), **env}
    return subprocess.run(
        [sys.executable, "-m", "reverse_etl", *args],
        env=full,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_wrong_password_is_terminal_and_never_shown(
    harness: Harness, fixture_manifest: Path, secure_servers: Any
) -> None:
    _, syncer, _, redis_endpoint = secure_servers
    harness.model("segments", segments((1, "a@x", "regular", "1.00")))
    wrong = PostgresEndpoint(syncer.host, syncer.port, "syncer", syncer.dbname, PG_PASSWORD + "x")
    result = run_sync(harness.specs["crm_segments"], Connections.of(wrong.url(), redis_endpoint.url()), RunOptions())
    assert result.status == "failed" and result.attempts == 1  # not retried: it cannot get better
    assert "password authentication failed" in (result.error or "")
    no_secret(result.error, result.as_dict())

    bad_redis = RedisEndpoint(redis_endpoint.host, redis_endpoint.port, password="nope-" + REDIS_PASSWORD)
    redis_result = run_sync(harness.specs["profile_cache"], Connections.of(syncer.url(), bad_redis.url()), RunOptions())
    assert redis_result.status == "failed" and redis_result.attempts == 1
    no_secret(redis_result.error)

    done = cli_run(
        harness, fixture_manifest, {"ROUNDTRIP_POSTGRES_URL": wrong.url()}, "run", "--sync", "crm_segments", "--json"
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["status"] == "failed" and line["attempts"] == 1
    no_secret(done.stdout, done.stderr)

    # --debug shows the tracebacks, through the same redaction: DuckDB's error repeats the
    # connection string, password included
    debug = cli_run(
        harness, fixture_manifest, {"ROUNDTRIP_POSTGRES_URL": wrong.url()}, "run", "--sync", "crm_segments", "--debug"
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "password authentication failed" in debug.stderr
    no_secret(debug.stdout, debug.stderr)
    status = cli_run(harness, fixture_manifest, {"ROUNDTRIP_POSTGRES_URL": wrong.url()}, "status", "--debug")
    assert status.returncode == 1 and "Traceback" in status.stderr
    no_secret(status.stdout, status.stderr)


def test_a_server_that_is_down_fails_every_sync_at_once_in_one_line(
    harness: Harness, fixture_manifest: Path, secure_servers: Any
) -> None:
    """Reached once before any sync runs (a few seconds of retries for a server that is
    restarting), not by every sync after its own retries."""
    import time

    harness.model("segments", segments((1, "a@x", "regular", "1.00")))
    down = f"postgresql://syncer:{PG_PASSWORD}@127.0.0.1:{free_port()}/roundtrip"
    started = time.monotonic()
    done = cli_run(harness, fixture_manifest, {"ROUNDTRIP_POSTGRES_URL": down}, "run", "--sync", "all", "--json")
    assert time.monotonic() - started < 20
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert {line["sync"] for line in lines} == set(harness.specs)  # one failed line per sync
    assert {line["status"] for line in lines} == {"failed"} and "cannot reach postgres" in lines[0]["error"]
    assert done.stderr.count("error:") == 1
    no_secret(done.stdout, done.stderr)


def test_too_many_connections_leave_no_password_in_the_history(
    harness: Harness, fixture_manifest: Path, secure_servers: Any
) -> None:
    """The role may hold one connection: the lock's; the run's (DuckDB's postgres extension) is
    refused, and DuckDB's error repeats the connection string it was given."""
    server, syncer, limited, redis_endpoint = secure_servers
    harness.model("segments", segments((1, "a@x", "regular", "1.00")))
    ok(run_sync(harness.specs["crm_segments"], Connections.of(syncer.url(), redis_endpoint.url()), RunOptions()))
    with psycopg.connect(server.endpoint.url(), autocommit=True) as admin:  # the trusted superuser
        admin.execute("grant syncer to limited")
        failed = run_sync(
            harness.specs["crm_segments"], Connections.of(limited.url(), redis_endpoint.url()), RunOptions()
        )
        assert failed.status == "failed" and failed.attempts == 3 and "too many connections" in (failed.error or "")
        no_secret(failed.error)
        stored = admin.execute("select error from reverse_etl.runs where run_id = %s", (failed.run_id,)).fetchone()
        assert stored is not None and "too many connections" in stored[0]
        no_secret(stored[0])
    status = cli_run(harness, fixture_manifest, {"ROUNDTRIP_POSTGRES_URL": syncer.url()}, "status", "--json")
    assert status.returncode == 0 and "too many connections" in status.stdout
    no_secret(status.stdout, status.stderr)


def test_one_invalid_exposure_fails_alone(harness: Harness, fixture_manifest: Path, tmp_path: Path) -> None:
    manifest = json.loads(fixture_manifest.read_text())
    exposure = manifest["exposures"]["exposure.retl_fixture.reco"]
    (exposure.get("config", {}).get("meta") or exposure["meta"])["sync"]["mode"] = "replace"  # not for Redis
    broken = tmp_path / "target"
    broken.mkdir()
    (broken / "manifest.json").write_text(json.dumps(manifest))
    env = {"ROUNDTRIP_POSTGRES_URL": harness.postgres.url(), "ROUNDTRIP_REDIS_URL": harness.redis.url()}
    listed = cli_run(harness, broken / "manifest.json", env, "list", "--json")
    assert listed.returncode == 1
    rows = {r["sync"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert rows["reco"]["mode"] == "invalid" and "replace is for postgres" in rows["reco"]["error"]
    harness.model("segments", segments((1, "a@x", "regular", "1.00")))
    ran = cli_run(harness, broken / "manifest.json", env, "run", "--sync", "profile_cache", "--json")
    assert ran.returncode == 0 and json.loads(ran.stdout.splitlines()[0])["status"] == "succeeded"
    assert redis_values(harness, "profile:*")["profile:1"]["segment"] == "regular"
    alone = cli_run(harness, broken / "manifest.json", env, "run", "--sync", "reco", "--json")
    assert alone.returncode == 1 and "replace is for postgres" in alone.stderr
