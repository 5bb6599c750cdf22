"""Faults found by a second adversarial sweep of the reverse sync's promises from outside (each
attack first made through the CLI against `make services`; these are their minimal forms, each
of which broke a promise of docs/reverse_etl.md before its fix). Every test asserts on what the destination holds,
on what the sync's state vouches for, or on what `verify` reports."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest
import redis

from reverse_etl.engine import Connections, RunOptions, SyncResult, run_sync
from reverse_etl.spec import SyncSettings, load_specs
from roundtrip.dev.services import PostgresEndpoint, RedisEndpoint

from .conftest import FIXTURE_PROJECT, Harness
from .test_sources import _parse, warehouse_db  # noqa: F401  (the fixture: a Postgres warehouse database)
from .test_world_faults import custom, ok, run, verified

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(autouse=True)
def _empty_redis(redis_client: redis.Redis) -> None:
    """Every test starts from an empty Redis database (the fixture flushes it)."""


def labels(prefix: str, keys: str) -> str:
    return f"select i::integer as user_id, '{prefix}' || i as label from range({keys}) r(i)"


def test_rows_a_trigger_refuses_are_not_counted_unchanged_nor_vouched_for(harness: Harness) -> None:
    """The destination table has a `BEFORE INSERT` trigger that returns NULL for some rows (an
    app filtering what it accepts; a `DO INSTEAD NOTHING` rule does the same). The run reports
    `succeeded`, "inserted 5 · unchanged 5" for a 10-row mart into an empty table, and the state
    vouches for all 10: "the state never claims more than the destination holds" and the counts
    are not true. Every later run's sample finds the 5 missing rows, "rewrites" them (the trigger
    drops them again) and still reports them unchanged, for ever, exit 0; only `verify` says
    `missing 5`. Found with `create trigger ... before insert on crm.p1 ... return null` for odd
    keys, `make reverse-sync`. The rows the destination did not take should be rejected with a
    reason (or the run fail), and the state should not own them."""
    harness.model("filtered", labels("v", "10"))
    spec = custom(harness, "shop_things", "filtered", "filtered", target="crm.filtered", primary_key=["user_id"],
                  columns=None, batch_rows=1000)  # fmt: skip
    harness.sql("create schema crm; create table crm.filtered (user_id integer primary key, label text)")
    harness.sql(
        """create function crm.only_even() returns trigger language plpgsql as $$
           begin if new.user_id % 2 = 1 then return null; end if; return new; end $$;
           create trigger only_even before insert on crm.filtered for each row execute function crm.only_even()"""
    )

    first = run(harness, spec)

    held = {k for (k,) in harness.sql("select user_id from crm.filtered")}
    if first.error is not None:  # the run failed, naming the refused rows: the table as it was
        assert "trigger or a rule" in first.error and "keys 1; 3; 5; 7; 9)" in first.error
        assert held == set()  # rolled back with the run: nothing is vouched for
        return
    assert held == {0, 2, 4, 6, 8}
    owned = {k for (k,) in harness.owned("filtered")}
    assert owned <= held, f"the state vouches for {sorted(owned - held)}, which the destination does not hold"
    assert first.error is not None or first.counts.unchanged == 0, (
        f"rows never written counted unchanged: {first.counts}"
    )


def _segments(name: str, segment: str, rows: int) -> str:
    return (
        f"create table marts.{name} as select i as user_id, 'u' || i || '@x' as email, '{segment}'::text as segment, "
        f"(i % 100)::numeric(18, 2) as lifetime_value, i as order_count from generate_series(1, {rows}) i"
    )


def test_a_mart_swapped_by_dbt_while_the_sync_reads_it_is_read_whole(
    data_dir: Path, pg_database: PostgresEndpoint, redis_endpoint: RedisEndpoint, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path, request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    """A Postgres warehouse (`--target postgres`): `dbt build` of the mart swaps its table as
    dbt-postgres does (`create table segments__dbt_tmp as ...; alter table segments rename to
    segments__dbt_backup; alter table segments__dbt_tmp rename to segments; commit; drop
    backup`). A sync whose read reaches the table while that swap holds its lock reads 0 rows (its
    snapshot predates the new table, the name now leads to it) and goes on as if the mart were
    empty: an upsert "succeeded, read 0" (the change is missed), a mirror deletes every row it
    owns ("deleted 1000", exit 0; only `max_delete_pct` stands between this and an empty CRM
    table). At every instant the mart held 1,000 rows. The run should read one whole version of
    the mart (or retry as a transient error), never none of it."""
    warehouse: PostgresEndpoint = request.getfixturevalue("warehouse_db")
    rows = 1000
    monkeypatch.setenv("ROUNDTRIP_WAREHOUSE_URL", warehouse.url())
    manifest = _parse("postgres", tmp_path, {"ROUNDTRIP_WAREHOUSE_URL": warehouse.url()})
    spec = {s.name: s for s in load_specs(manifest, target="postgres")}["crm_segments"]
    settings = {**spec.settings.model_dump(exclude_none=True), "mode": "mirror", "track_changes": None,
                "max_delete_pct": 100}  # fmt: skip
    spec = spec.model_copy(update={"settings": SyncSettings.model_validate(settings)})
    connections = Connections.of(postgres_url=pg_database.url(), redis_url=redis_endpoint.url())
    with psycopg.connect(warehouse.url(), autocommit=True) as conn:
        conn.execute("create schema marts")
        conn.execute(_segments("segments", "v1", rows))
    assert run_sync(spec, connections, RunOptions(dbt_project_dir=FIXTURE_PROJECT)).error is None

    swap = psycopg.connect(warehouse.url())  # dbt's transaction, up to its commit
    swap.execute(_segments("segments__dbt_tmp", "v2", rows))
    swap.execute("alter table marts.segments rename to segments__dbt_backup")
    during: list[SyncResult] = []
    sync = threading.Thread(
        target=lambda: during.append(run_sync(spec, connections, RunOptions(dbt_project_dir=FIXTURE_PROJECT)))
    )
    sync.start()
    time.sleep(3)  # the sync waits for the table's lock
    swap.execute("alter table marts.segments__dbt_tmp rename to segments")
    swap.commit()
    swap.execute("drop table marts.segments__dbt_backup")
    swap.commit()
    swap.close()
    sync.join(120)

    with psycopg.connect(pg_database.url()) as conn:
        held = dict(conn.execute("select segment, count(*) from crm.segments group by 1").fetchall())
    assert sum(held.values()) == rows, f"the CRM table holds {held} after {during[0].counts}"


def _cursor_mart(keys: int, null_from: int) -> str:
    return (
        "select i::integer as user_id, 'u' || i as email, 'regular' as segment, case when i >= "
        f"{null_from} then null else timestamp '2026-01-01' + interval (i) minute end as updated_at from range({keys}) r(i)"
    )


def test_a_new_row_with_a_null_cursor_is_not_left_out_of_cursor_runs(harness: Harness) -> None:
    """`change_detection: cursor` on `updated_at`: rows the mart adds with a NULL cursor (a
    backfilled row, a left join that found nothing) are never read by a cursor run (`NULL >=
    watermark` is not true), so they reach the destination only at the next full diff, up to
    `full_diff_every - 1` runs later, while every run in between reports `succeeded`,
    "unchanged 6" for a 9-row mart and `verify` exits 1. Nothing says a cursor must not be NULL:
    such rows should be read every run (their change cannot be dated), or rejected naming the
    cursor."""
    spec = harness.variant(
        "crm_segments", "by_cursor_nulls", "segments", target="crm.by_cursor_nulls", mode="mirror",
        track_changes=None, change_detection="cursor", cursor="updated_at", full_diff_every=10,
    )  # fmt: skip
    harness.model("segments", _cursor_mart(6, null_from=6))
    assert run(harness, spec).error is None
    harness.model("segments", _cursor_mart(9, null_from=6))  # three new users, their updated_at NULL

    second = run(harness, spec)

    held = {k for (k,) in harness.sql("select user_id from crm.by_cursor_nulls")}
    assert second.error is not None or held == set(range(9)), f"{second.counts}, read by {second.read_by}"


@pytest.mark.parametrize("on_schema_change", ["append_new_columns", "sync_all_columns"])
def test_a_column_renamed_in_the_mart_arrives_with_its_values(harness: Harness, on_schema_change: str) -> None:
    """The mart renames a column and keeps its values (`name` -> `full_name`, a dbt refactor).
    With `append_new_columns` or `sync_all_columns` the run adds `full_name` to the table, and
    then reports every row `unchanged` and sends none: `full_name` stays NULL in every row
    (`sync_all_columns` also drops `name`: the values are gone from the destination), exit 0.
    Only the next run's `verify_sample` finds the NULLs and heals them (with `verify_sample: 0`,
    never). The docs: "every record's
    fingerprint changes with its columns, so every record is sent again"; the fingerprint hashes
    the values only, which did not change. A case-only rename (`name` -> `"Name"`) does the same.
    Found with `make reverse-sync` after renaming a column of a mart with on_schema_change set."""
    harness.model("renamed", "select i::integer as user_id, 'n' || i as name, i * 10 as score from range(4) r(i)")
    spec = custom(harness, "shop_things", "renamed", "renamed", target="crm.renamed", primary_key=["user_id"],
                  columns=None, batch_rows=1000, mode="upsert", on_schema_change=on_schema_change)  # fmt: skip
    assert run(harness, spec).error is None
    harness.model("renamed", "select i::integer as user_id, 'n' || i as full_name, i * 10 as score from range(4) r(i)")

    after = run(harness, spec)

    assert after.error is None, after.error
    held = set(harness.sql("select user_id, full_name, score from crm.renamed"))
    assert held == {(i, f"n{i}", i * 10) for i in range(4)}, f"{sorted(held)} after {after.counts}"


def test_verify_of_a_fill_empty_sync_does_not_call_a_typed_value_a_difference(harness: Harness) -> None:
    """`fill_empty: true` keeps "a value a person typed"; yet `verify` reports that value as
    `differing` and exits 1, for ever: `verify --repair` (every record read back) rewrites
    nothing, as fill_empty says, and the next verify differs again. A CI step running `make
    reverse-sync-verify` then fails on every edit people are meant to make. Found with
    `update crm.fe set email = 'typed' where user_id = 1` and `verify --select fe --repair`."""
    harness.model("fill", "select i::integer as user_id, 'm' || i as email from range(3) r(i)")
    spec = custom(harness, "shop_things", "fill", "fill", target="crm.fill", primary_key=["user_id"], columns=None,
                  batch_rows=1000, fill_empty=True)  # fmt: skip
    assert run(harness, spec).error is None
    harness.sql("update crm.fill set email = 'typed' where user_id = 1")
    assert run(harness, spec, verify_all=True).error is None  # what --repair runs: nothing to rewrite

    report = verified(harness, spec)

    assert harness.sql("select email from crm.fill where user_id = 1") == [("typed",)]
    assert report.problems == 0, report


def test_a_ctrl_c_inside_a_duckdb_statement_is_an_interrupt_on_record(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while DuckDB's postgres extension writes arrives as duckdb.InterruptException, an
    ordinary error: the run was recorded `failed` and the CLI exited 1 (a shell script went on).
    It is recorded, not retried, and ends the invocation as an interrupt (the CLI's 130); the
    destination is as it was."""
    import duckdb

    from reverse_etl.destinations.postgres import PostgresDestination
    from reverse_etl.runs import recent_runs

    harness.model("filtered", labels("v", "10"))
    spec = custom(harness, "shop_things", "filtered", "filtered", target="crm.filtered", primary_key=["user_id"],
                  columns=None, batch_rows=1000)  # fmt: skip
    calls = []

    def interrupted(self: PostgresDestination, *args: object, **kwargs: object) -> None:
        calls.append(1)
        raise duckdb.InterruptException("INTERRUPT Error: Interrupted!")

    monkeypatch.setattr(PostgresDestination, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(harness, spec)
    assert len(calls) == 1  # not retried
    assert [r.status for r in recent_runs(harness.postgres.url(), "filtered", 1)] == ["failed"]
    assert harness.sql("select count(*) from pg_tables where tablename = 'filtered'") == [(0,)]

    def ctrl_c(self: PostgresDestination, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # between statements: Python's own interrupt

    monkeypatch.setattr(PostgresDestination, "write", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run(harness, spec)
    assert [r.status for r in recent_runs(harness.postgres.url(), "filtered", 1)] == ["failed"]  # not abandoned


def test_a_sync_pointed_at_a_new_database_starts_anew_and_the_old_one_keeps_its_guard(harness: Harness) -> None:
    """The local state cache is evidence that a sync committed before (its state's schema
    dropped: insert_only stops rather than queue consumed entries again). A cache kept from
    another database is not: `make demo`, then ROUNDTRIP_POSTGRES_URL pointed at a new database,
    stopped the queue sync as "its state was lost" (found by the growth benchmark, which gives
    each engine a database of its own beside one data folder)."""
    harness.model("triggers", "select 't' || i as trigger_id, i::integer as user_id from range(20) r(i)")
    spec = custom(harness, "queue_a", "queue_a", "triggers")
    ok(run(harness, spec))
    fresh = f"{harness.postgres.dbname}_elsewhere"
    harness.sql(f'drop database if exists "{fresh}"')
    harness.sql(f'create database "{fresh}"')
    try:
        elsewhere = harness.postgres.url(fresh)
        first = ok(run(harness, spec, pg_url=elsewhere))
        assert first.counts.inserted == 20
        with psycopg.connect(elsewhere) as conn:
            assert conn.execute("select count(*) from crm.email_queue").fetchone() == (20,)
    finally:
        harness.sql(f'drop database "{fresh}" with (force)')

    # the first database's state dropped: its cache still says the sync had one
    harness.sql("delete from crm.email_queue where trigger_id in ('t1', 't2')")  # consumed
    harness.sql("drop schema reverse_etl cascade")
    lost = run(harness, spec)
    assert lost.error is not None and "--full-resync" in (lost.hint or lost.error)
    assert {r[0] for r in harness.sql("select trigger_id from crm.email_queue")} & {"t1", "t2"} == set()
