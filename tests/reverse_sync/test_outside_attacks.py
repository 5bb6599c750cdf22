"""Faults found by an adversarial sweep of the reverse sync's promises from outside (each attack
was first made through the CLI against `make services`; these are their minimal forms, each of
which broke a promise before its fix). Every test asserts on what the destination holds,
compared with the mart, or on what `verify` reports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from reverse_etl.state.registry import tables_of
from roundtrip.core.paths import PROJECT_ROOT

from .conftest import Harness
from .test_world_faults import (
    custom,
    expected_recos,
    expected_things,
    held_things,
    mart,
    ok,
    redis_json,
    run,
    things,
    verified,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

RECOS = (
    "select i::integer as user_id, (i % 9)::integer as item_id, 0.5::double as score, "
    "1 as recommendation_rank from range({d}, 300) r(i)"
)


@pytest.fixture(autouse=True)
def _empty_redis(redis_client: redis.Redis) -> None:
    """Every test starts from an empty Redis database (the fixture flushes it)."""


@pytest.mark.parametrize("sync", ["shop_things", "reco"])
def test_a_truncated_state_log_is_re_owned_like_a_dropped_one(harness: Harness, data_dir: Path, sync: str) -> None:
    """`truncate reverse_etl.rows_<id>` (the log emptied, its table kept) while `syncs` still
    says the sync is at version 2: docs/reverse_etl.md promises that a dropped or damaged log
    makes the next run re-own the destination, and a mirror delete what the mart lacks. A
    truncated log is not noticed: with the local cache gone (another machine, a CI runner) the
    run writes like a first run, deletes nothing, and `verify` exits clean, calling the rows
    the mart dropped `not_ours`. Found as: `truncate reverse_etl.rows_7aecb40e5f8feaa6`, the
    cache file moved away, 10 users dropped from marts.recommendations, `make reverse-sync
    SYNC=reco_cache`: Redis kept the 10 keys (2,561 keys for a 2,551-key mart), exit 0."""
    spec = custom(harness, sync, sync, "things" if sync == "shop_things" else "recos", batch_rows=100)
    build = (lambda d: things(300, dropped=d)) if sync == "shop_things" else (lambda d: RECOS.format(d=d))
    harness.model(spec.model, build(0))
    ok(run(harness, spec))
    ok(run(harness, spec))
    rows, _ = tables_of(sync)
    harness.sql(f'truncate reverse_etl."{rows}"')
    for cache in (data_dir / "reverse_etl").glob("*.duckdb"):
        cache.unlink()
    harness.model(spec.model, build(100))  # the mart drops 100 records the sync wrote

    ok(run(harness, spec))

    if sync == "shop_things":
        assert held_things(harness) == expected_things(harness)
    else:
        assert redis_json(harness, "reco:*") == expected_recos(harness)


LONG = "t" * 63  # Postgres keeps 63 bytes of a name (NAMEDATALEN - 1) and drops the rest silently


def test_targets_alike_in_their_first_63_bytes_are_two_tables_or_refused(harness: Harness) -> None:
    """Two syncs whose targets differ only after the 63rd byte (`crm.<63 t>_one`, `crm.<63
    t>_two`) both write Postgres' truncation of the name, one table: each run overwrites the
    other's rows ("succeeded", "healed 3" on every run, for ever) and neither table the
    exposures name exists. dbt refuses such relation names; the sync should too (the spec
    invalid, naming the 63-byte limit), or keep them apart. Found with two exposures in
    models/: `verify --select atk_long_a2` differs on every row after atk_long_b2 ran."""
    harness.model("names_a", "select i::integer as user_id, 'from a' as label from range(3) r(i)")
    harness.model("names_b", "select i::integer as user_id, 'from b' as label from range(3) r(i)")
    try:
        spec_a = custom(harness, "shop_things", "long_a", "names_a", target=f"crm.{LONG}_one", primary_key=["user_id"],
                        columns=None)  # fmt: skip
        spec_b = custom(harness, "shop_things", "long_b", "names_b", target=f"crm.{LONG}_two", primary_key=["user_id"],
                        columns=None)  # fmt: skip
    except ValueError as refused:  # refusing the names is one right answer
        assert "63" in str(refused)
        return
    first_a, first_b = run(harness, spec_a), run(harness, spec_b)
    if first_a.error or first_b.error:  # a loud failure naming the limit is the other
        assert "63" in str(first_a.error or first_b.error)
        return
    assert mart(harness, "names_a", "select user_id, label from {model}") == set(
        harness.sql(f'select user_id, label from crm."{LONG}_one"')
    )
    assert verified(harness, spec_a).problems == 0


def test_a_key_turned_into_another_redis_type_is_found_and_rewritten(
    harness: Harness, redis_client: redis.Redis
) -> None:
    """A key the sync owns replaced by hand with a list (`del k; rpush k x`): a run whose
    sample reads it, and `verify` (with or without `--repair`), fail with a bare "WRONGTYPE
    Operation against a key holding the wrong kind of value" that names neither the key nor the
    fix (only `--full-resync` overwrites it), while runs whose sample misses it report the key
    `unchanged`. The docs promise verify reports what differs and a sampled difference makes
    the run rewrite what differs. Found with 8 keys of reco_cache turned into lists and hashes."""
    spec = custom(harness, "reco", "reco", "recos")
    harness.model("recos", RECOS.format(d=0))
    ok(run(harness, spec))
    redis_client.delete("reco:7")
    redis_client.rpush("reco:7", "x", "y")

    report = verified(harness, spec)  # raised a bare WRONGTYPE before
    assert report.problems == 1

    ok(run(harness, spec, verify_sample=1_000_000))  # every key read back: the list is rewritten
    assert redis_json(harness, "reco:*") == expected_recos(harness)


def test_a_row_inserted_by_hand_into_a_replaced_table_is_swapped_out(harness: Harness) -> None:
    """mode replace owns the whole table (TRUNCATE + INSERT), yet a row a person inserted into
    it stays for as long as the mart does not change: the digest moved, but the run reports
    every row `unchanged`, swaps nothing, and `verify` exits clean calling the row `not_ours`;
    the next refresh serves it from the materialized views. Any other change (a value edited)
    does swap it out. Found with `insert into marts.iris_zones (iris_code) values ('FOREIGN')`
    and `make reverse-sync SYNC=tag:serving`: 27 rows for a 26-row mart, exit 0."""
    # a model with no serving views below it: the run refreshes nothing (no dbt)
    spec = custom(harness, "serving_items", "plain_items", "plain_items", target="marts.plain_items")
    harness.model("plain_items", "select i::integer as item_id, 'item ' || i as title from range(5) r(i)")
    ok(run(harness, spec))
    harness.sql("insert into marts.plain_items (item_id, title) values (1000, 'not in the mart')")

    swapped = ok(run(harness, spec))

    assert swapped.counts.deleted == 1 and swapped.counts.unchanged == 5
    assert set(harness.sql("select item_id, title from marts.plain_items")) == mart(
        harness, "plain_items", "select item_id, title from {model}"
    )


def test_a_nan_key_does_not_break_every_later_run(harness: Harness) -> None:
    """A `double` key holding NaN is accepted by the first run (Postgres has NaN and it is
    unique there); every later run then fails with `Postgres ERROR: column "nan" does not
    exist`: the sample read back spells the key as `nan::double precision`
    (`_pg_literal` uses `repr`), so the sync is stuck failing, with no hint. Found with a mart
    of keys (0.0, -0.0, NaN, 1.0) synced by mirror to `atk.float_keys`: run 1 exit 2 (the two
    zeros rejected as one key), run 2 and every one after exit 1."""
    spec = custom(harness, "shop_things", "float_keys", "float_keys", target="crm.float_keys", primary_key=["k"],
                  columns=None)  # fmt: skip
    harness.model("float_keys", "select * from (values (1.0::double, 'one'), ('nan'::double, 'nan')) t(k, label)")
    ok(run(harness, spec))

    ok(run(harness, spec))  # failed before: column "nan" does not exist

    assert set(harness.sql("select k::text, label from crm.float_keys")) == {("1", "one"), ("NaN", "nan")}


def test_a_lost_state_log_does_not_requeue_what_the_app_consumed(harness: Harness) -> None:
    """insert_only: "a delivered row belongs to the app: one it deleted (a consumed queue entry)
    ... is not sent again". After the sync's log is dropped (a documented repair: re-owned, every
    record sent again) the next run re-inserts every entry the mailer had consumed, with exit 0:
    duplicate emails. No guard applies to inserts. Found on the demo: 100 rows deleted from
    crm.email_queue, `drop table reverse_etl.rows_6ceb85f10dd43133`, `make reverse-sync
    SYNC=crm_email_queue`: "inserted 100", the queue back to 870 rows. Either the run stops
    (naming the fix) or it leaves consumed entries alone."""
    harness.model("triggers", "select 't' || i as trigger_id, i::integer as user_id from range(20) r(i)")
    spec = custom(harness, "queue_a", "queue_a", "triggers")
    ok(run(harness, spec))
    harness.sql("delete from crm.email_queue where trigger_id in ('t1', 't2', 't3')")  # the mailer consumed them
    rows, _ = tables_of("queue_a")
    harness.sql(f'drop table reverse_etl."{rows}"')

    after = run(harness, spec)

    queued = {r[0] for r in harness.sql("select trigger_id from crm.email_queue")}
    assert after.error is not None or not queued & {"t1", "t2", "t3"}, "consumed entries queued again"


def test_a_declared_connection_whose_variable_is_unset_is_named_not_dropped(
    harness: Harness, fixture_manifest: Path, tmp_path: Path
) -> None:
    """A connections file declaring `redis: {type: redis, url: "${ATTACK_UNSET_URL}"}` with the
    variable unset: the connection is silently left out. `sync connections` lists only the
    others and exits 0 (docs: exit 1 if any cannot be used), and `run` says "no redis
    connection configured, hint: set ROUNDTRIP_REDIS_URL", a variable the file does not read."""
    connections = tmp_path / "connections.yml"
    connections.write_text(
        "state: postgres\nconnections:\n"
        "  postgres: {type: postgres, url: '${ATTACK_PG_URL}'}\n"
        "  redis: {type: redis, url: '${ATTACK_UNSET_URL}'}\n"
    )
    env = {**os.environ, "ATTACK_PG_URL": harness.postgres.url(), "ROUNDTRIP_SYNC_CONNECTIONS": str(connections),
           "DBT_TARGET_PATH": str(fixture_manifest.parent), "ROUNDTRIP_DUCKDB_PATH": str(harness.warehouse)}  # fmt: skip
    env.pop("ATTACK_UNSET_URL", None)
    listed = subprocess.run(
        [sys.executable, "-m", "reverse_etl", "connections"], env=env, cwd=PROJECT_ROOT, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert listed.returncode == 1, listed.stdout
    assert "ATTACK_UNSET_URL" in listed.stdout + listed.stderr


def test_a_column_name_postgres_would_cut_fails_the_run_naming_it(harness: Harness) -> None:
    """A mart column of 64 bytes would be cut to 63 by Postgres (two alike would be one): the
    run fails before writing, naming the column and the fix; nothing is created."""
    long_column = "c" * 64
    harness.model("wide_names", f"select i::integer as user_id, 'x' as {long_column} from range(3) r(i)")
    spec = custom(harness, "shop_things", "wide_names", "wide_names", target="crm.wide_names", primary_key=["user_id"],
                  columns=None)  # fmt: skip
    failed = run(harness, spec)
    assert failed.status == "failed" and "64 bytes" in (failed.error or "")
    assert harness.sql("select count(*) from pg_tables where tablename = 'wide_names'") == [(0,)]
