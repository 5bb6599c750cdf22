"""Each Postgres mode's semantics, on the real Postgres, read back from the tables themselves."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from reverse_etl.engine import SyncResult
from reverse_etl.runs import lock_key_sql
from reverse_etl.state.registry import tables_of

from .conftest import Harness

pytestmark = pytest.mark.postgres

SEGMENTS = "t(user_id, email, segment, lifetime_value, order_count)"


def counts(result: SyncResult) -> dict[str, int]:
    assert result.error is None, result.error
    return result.counts.as_dict()


def row_versions(h: Harness, table: str, key: str) -> dict[Any, str]:
    """Each row's xmin: it changes whenever Postgres writes the row, even with equal values."""
    return {r[0]: r[1] for r in h.sql(f"select {key}, xmin::text from {table}")}


def test_upsert_rejects_bad_keys_and_a_second_run_writes_nothing(harness: Harness) -> None:
    harness.model(
        "segments",
        f"""select * from (values
            (1, 'ann@example.com', 'high_value', 812.40::decimal(18, 2), 7),
            (2, 'bob@example.com', 'regular', 20.00, 1),
            (null, 'nobody@example.com', 'regular', 5.00, 1),
            (3, 'cy@example.com', 'at_risk', 10.00, 1),
            (3, 'cy.two@example.com', 'new_user', 0.00, 0)) {SEGMENTS}""",
    )
    first = harness.run("crm_segments")
    assert first.status == "succeeded_with_rejects"
    assert counts(first) == {
        "read": 5,
        "inserted": 2,
        "updated": 0,
        "unchanged": 0,
        "healed": 0,
        "deleted": 0,
        "rejected": 3,
        "skipped": 0,
    }
    assert harness.sql("select user_id, email, lifetime_value::text from crm.segments order by 1") == [
        (1, "ann@example.com", "812.40"),
        (2, "bob@example.com", "20.00"),
    ]
    rejected = harness.sql(
        "select row_key, reason, row_data->>'email' from reverse_etl.rejected_rows where run_id = %s order by 3",
        (first.run_id,),
    )
    assert rejected == [
        ({"user_id": 3}, "duplicate key: 2 rows share it", "cy.two@example.com"),
        ({"user_id": 3}, "duplicate key: 2 rows share it", "cy@example.com"),
        ({"user_id": None}, "NULL in key column(s): user_id", "nobody@example.com"),
    ]

    # the run created the table: rows by COPY, then its primary key on the declared key
    primary_key = harness.sql(
        """select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
           where i.indrelid = 'crm.segments'::regclass and i.indisprimary"""
    )
    assert primary_key == [("user_id",)]

    before = row_versions(harness, "crm.segments", "user_id")
    second = harness.run("crm_segments")
    assert counts(second) == {
        "read": 5,
        "inserted": 0,
        "updated": 0,
        "unchanged": 2,
        "healed": 0,
        "deleted": 0,
        "rejected": 3,
        "skipped": 0,
    }
    assert row_versions(harness, "crm.segments", "user_id") == before  # not one row rewritten

    harness.model(
        "segments",
        f"""select * from (values (1, 'ann@example.com', 'high_value', 812.40::decimal(18, 2), 7),
                                  (2, 'bob@example.com', 'regular', 25.00, 2),
                                  (4, 'di@example.com', 'new_user', 0.00, 0)) {SEGMENTS}""",
    )
    third = harness.run("crm_segments")
    assert third.status == "succeeded"
    assert counts(third) == {
        "read": 3,
        "inserted": 1,
        "updated": 1,
        "unchanged": 1,
        "healed": 0,
        "deleted": 0,
        "rejected": 0,
        "skipped": 0,
    }
    after = row_versions(harness, "crm.segments", "user_id")
    assert sorted(k for k in after if after[k] != before.get(k)) == [2, 4]  # only those were written
    runs = harness.sql("select run_id, status, inserted, updated, unchanged, rejected from reverse_etl.runs order by 1")
    assert runs == [
        (first.run_id, "succeeded_with_rejects", 2, 0, 0, 3),
        (second.run_id, "succeeded_with_rejects", 0, 0, 2, 3),
        (third.run_id, "succeeded", 1, 1, 1, 0),
    ]


def test_track_changes_moves_previous_value_only_on_a_real_change(harness: Harness) -> None:
    def segments(*rows: tuple[int, str | None, str]) -> None:
        values = ", ".join(
            f"({u}, 'u{u}@example.com', {'null' if s is None else repr(s)}, {ltv}::decimal(18, 2), 1)"
            for u, s, ltv in rows
        )
        harness.model("segments", f"select * from (values {values}) {SEGMENTS}")

    def state() -> dict[int, tuple[str | None, str | None, Any]]:
        rows = harness.sql("select user_id, segment, previous_segment, segment_changed_at from crm.segments")
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    segments((1, "high_value", "600"), (2, "regular", "20"), (3, None, "0"))
    harness.run("crm_segments")
    first = state()
    assert {u: v[:2] for u, v in first.items()} == {1: ("high_value", None), 2: ("regular", None), 3: (None, None)}
    assert all(v[2] is not None for v in first.values())  # entered their segment now

    segments((1, "at_risk", "600"), (2, "regular", "35"), (3, None, "1"))  # 2 and 3: other columns only
    assert counts(harness.run("crm_segments"))["updated"] == 3
    second = state()
    assert second[1][:2] == ("at_risk", "high_value") and second[1][2] > first[1][2]
    assert second[2] == first[2]  # same segment: neither previous nor changed_at move
    assert second[3] == first[3]  # NULL -> NULL is no change

    segments((1, None, "600"), (2, "regular", "35"), (3, "new_user", "1"))
    harness.run("crm_segments")
    third = state()
    assert third[1][:2] == (None, "at_risk") and third[1][2] > second[1][2]  # a value -> NULL is a change
    assert third[3][:2] == ("new_user", None) and third[3][2] > second[3][2]  # NULL -> a value too
    assert third[2] == first[2]


THINGS = "t(shop_id, sku, label, price)"


def test_mirror_deletes_only_rows_it_wrote(harness: Harness) -> None:
    harness.model(
        "things",
        f"select * from (values (1, 'a', 'A', 1.5), (1, 'b', 'B', 2.5), (2, 'a', 'C', 3.5), (2, 'b', 'D', 4.5)) {THINGS}",
    )
    assert counts(harness.run("shop_things"))["inserted"] == 4
    harness.sql("insert into shop.things values (9, 'z', 'written by the app', 1)")  # not this sync's
    harness.sql("delete from shop.things where shop_id = 2 and sku = 'a'")  # someone removed one of ours

    # the model drops (1, b) and (2, a); (2, b) comes twice and is rejected, (3, a) is new
    harness.model(
        "things",
        f"""select * from (values (1, 'a', 'A', 1.5), (2, 'b', 'D2', 4.5), (2, 'b', 'D3', 4.5),
                                  (3, 'a', 'E', 5.5)) {THINGS}""",
    )
    result = harness.run("shop_things")  # batch_rows 2: several batches
    assert counts(result) == {
        "read": 4,
        "inserted": 1,
        "updated": 0,
        "unchanged": 1,
        "healed": 0,
        "deleted": 1,
        "rejected": 2,
        "skipped": 0,
    }
    assert harness.sql("select shop_id, sku, title from shop.things order by 1, 2") == [
        (1, "a", "A"),
        (2, "b", "D"),  # its key was rejected this run: the row we wrote before stays as it was
        (3, "a", "E"),
        (9, "z", "written by the app"),
    ]
    assert harness.owned("shop_things") == [(1, "a"), (2, "b"), (3, "a")]
    harness.model("things", f"select * from (values (1, 'a', 'A', 1.5), (3, 'a', 'E', 5.5)) {THINGS}")
    assert counts(harness.run("shop_things"))["deleted"] == 1
    assert harness.sql("select shop_id, sku from shop.things order by 1, 2") == [(1, "a"), (3, "a"), (9, "z")]


def test_dry_run_writes_nothing_and_predicts_the_run(harness: Harness) -> None:
    harness.model("things", f"select * from (values (1, 'a', 'A', 1.5), (1, 'b', 'B', 2.5)) {THINGS}")
    fresh = harness.run("shop_things", dry_run=True)
    assert counts(fresh)["inserted"] == 2
    assert harness.sql("select count(*) from pg_namespace where nspname in ('reverse_etl', 'shop')") == [(0,)]

    harness.run("shop_things")
    harness.model("things", f"select * from (values (1, 'a', 'A2', 1.5), (2, 'c', 'C', 9), (2, 'c', 'C', 9)) {THINGS}")

    def snapshot() -> list[Any]:
        return [
            harness.sql(f"select t::text, xmin::text from {table} t order by 1")
            for table in (
                "shop.things",
                f'reverse_etl."{tables_of("shop_things")[0]}"',
                "reverse_etl.runs",
                "reverse_etl.rejected_rows",
                "reverse_etl.syncs",
            )
        ]

    before = snapshot()
    plan = harness.run("shop_things", dry_run=True)
    assert snapshot() == before
    assert plan.status == "dry_run" and plan.run_id is None
    assert counts(plan) == {
        "read": 3,
        "inserted": 0,
        "updated": 1,
        "unchanged": 0,
        "healed": 0,
        "deleted": 1,
        "rejected": 2,
        "skipped": 0,
    }
    assert plan.changes == [
        {"action": "update", "key": {"shop_id": 1, "sku": "a"}, "row": {"shop_id": 1, "sku": "a", "title": "A2", "price": pytest.approx(1.5)}}
    ]  # fmt: skip
    assert plan.deletions == [{"shop_id": 1, "sku": "b"}]
    assert [r["reason"] for r in plan.rejections] == ["duplicate key: 2 rows share it"] * 2

    real = harness.run("shop_things")
    assert counts(real) == counts(plan)


QUEUE_DDL = """
    create schema crm;
    create table crm.email_queue (
        queue_id bigint generated always as identity primary key,
        trigger_id text not null unique,
        user_id bigint, trigger_type text, payload text,
        status text not null default 'pending',
        sent_at timestamptz
    )"""
TRIGGERS = "t(trigger_id, user_id, trigger_type, payload)"


def test_insert_only_two_concurrent_runs_queue_each_trigger_once(harness: Harness) -> None:
    harness.sql(QUEUE_DDL)  # the app owns the queue: its own columns, a unique trigger_id
    harness.model(
        "triggers",
        f"""select * from (values ('t1', 1, 'abandoned_search', '{{"q":"shoes"}}'),
                                  ('t2', 2, 'win_back', '{{}}'), ('t3', 3, 'welcome', '{{}}')) {TRIGGERS}""",
    )
    # queue_a and queue_b are two syncs (two locks, two states) feeding the same queue. Hold the
    # queue so that both runs reach their INSERT, then let them race.
    with psycopg.connect(harness.postgres.url()) as blocker:
        blocker.execute("lock table crm.email_queue in share mode")
        results: dict[str, SyncResult] = {}
        threads = [
            threading.Thread(target=lambda n=n: results.__setitem__(n, harness.run(n))) for n in ("queue_a", "queue_b")
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            waiting = blocker.execute(
                "select count(*) from pg_locks where relation = 'crm.email_queue'::regclass and not granted"
            ).fetchone()
            if waiting and waiting[0] == 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the two runs never both reached the queue")
        blocker.rollback()  # release: both insert at once
        for t in threads:
            t.join(60)
    assert sorted(counts(r)["inserted"] for r in results.values()) == [0, 3]
    assert sorted(counts(r)["unchanged"] for r in results.values()) == [0, 3]
    assert harness.sql("select trigger_id, status from crm.email_queue order by 1") == [
        ("t1", "pending"),
        ("t2", "pending"),
        ("t3", "pending"),
    ]

    harness.sql("update crm.email_queue set status = 'sent', sent_at = now() where trigger_id = 't1'")
    harness.model(
        "triggers",
        f"""select * from (values ('t1', 1, 'abandoned_search', '{{"q":"boots"}}'),
                                  ('t2', 2, 'win_back', '{{}}'), ('t4', 4, 'welcome', '{{}}')) {TRIGGERS}""",
    )
    again = harness.run("queue_a")
    assert counts(again) == {
        "read": 3,
        "inserted": 1,
        "updated": 0,
        "unchanged": 2,
        "healed": 0,
        "deleted": 0,
        "rejected": 0,
        "skipped": 0,
    }
    assert harness.sql("select trigger_id, payload, status from crm.email_queue order by 1") == [
        ("t1", '{"q":"shoes"}', "sent"),  # never resent, never updated
        ("t2", "{}", "pending"),
        ("t3", "{}", "pending"),  # insert_only never deletes
        ("t4", "{}", "pending"),
    ]


def test_a_second_run_of_the_same_sync_is_refused_while_one_holds_the_lock(harness: Harness) -> None:
    harness.model("triggers", f"select * from (values ('t1', 1, 'welcome', '{{}}')) {TRIGGERS}")
    with psycopg.connect(harness.postgres.url(), autocommit=True) as holder:
        holder.execute(f"select pg_advisory_lock({lock_key_sql()})", ("queue_a",))  # as a running sync would
        locked = harness.run("queue_a")
        other = harness.run("queue_b")  # another sync is not blocked
    assert locked.status == "locked" and "already running" in (locked.error or "")
    assert locked.run_id is None and locked.counts.inserted == 0
    assert other.status == "succeeded"
    assert harness.sql("select sync from reverse_etl.runs") == [("queue_b",)]
    assert harness.run("queue_a").status == "succeeded"  # the lock went with the holder's session


FAIL_ONCE = """
    create sequence shop.failures;
    create function shop.fail_first_write() returns trigger language plpgsql as $$
    begin
        if nextval('shop.failures') = 1 then  -- sequences ignore rollbacks: only the first attempt fails
            raise exception '{message}' using errcode = '{code}';
        end if;
        return new;
    end $$;
    create trigger fail_first_write before insert or update on shop.things
        for each row execute function shop.fail_first_write();
"""


def test_transient_errors_are_retried_with_the_same_run(harness: Harness) -> None:
    harness.model("things", f"select * from (values (1, 'a', 'A', 1.5)) {THINGS}")
    harness.run("shop_things")
    harness.sql(FAIL_ONCE.format(code="40001", message="could not serialize access"))  # serialization_failure
    harness.model("things", f"select * from (values (1, 'a', 'A2', 1.5), (1, 'b', 'B', 2)) {THINGS}")
    result = harness.run("shop_things")
    assert result.status == "succeeded" and result.attempts == 2
    assert counts(result) == {
        "read": 2,
        "inserted": 1,
        "updated": 1,
        "unchanged": 0,
        "healed": 0,
        "deleted": 0,
        "rejected": 0,
        "skipped": 0,
    }
    assert harness.sql("select sku, title from shop.things order by 1") == [("a", "A2"), ("b", "B")]
    assert harness.sql("select attempts, status, inserted, updated from reverse_etl.runs where run_id = %s", (result.run_id,)) == [
        (2, "succeeded", 1, 1)
    ]  # fmt: skip


def test_terminal_errors_fail_at_once_and_leave_table_and_state_as_they_were(harness: Harness) -> None:
    harness.model("things", f"select * from (values (1, 'a', 'A', 1.5), (1, 'b', 'B', 2.5)) {THINGS}")
    harness.run("shop_things")
    # check_violation: retrying cannot help
    harness.sql(FAIL_ONCE.format(code="23514", message="new row violates check constraint"))
    harness.model("things", f"select * from (values (1, 'a', 'A2', 1.5), (2, 'c', 'C', 3)) {THINGS}")
    failed = harness.run("shop_things")
    assert failed.status == "failed" and failed.attempts == 1
    assert "new row violates check constraint" in (failed.error or "")
    assert harness.sql("select sku, title from shop.things order by 1") == [("a", "A"), ("b", "B")]
    assert harness.sql("select status, error is not null, inserted from reverse_etl.runs where run_id = %s", (failed.run_id,)) == [
        ("failed", True, None)
    ]  # fmt: skip
    # the state was rolled back with the rows: the next run sends the same changes again
    assert counts(harness.run("shop_things")) == {
        "read": 2, "inserted": 1, "updated": 1, "unchanged": 0, "healed": 0, "deleted": 1, "rejected": 0, "skipped": 0,
    }  # fmt: skip
