"""Write policies, as CRM tools have them: ``match: create_only | update_only | both`` and
``fill_empty`` (fill only what is NULL: fields people edit), on Postgres and Redis, asserted on
what the destinations hold and on what the state then owns."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from reverse_etl.engine import SyncResult

from .conftest import Harness

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

CRM = "crm.policy"
DDL = f"""create schema if not exists crm;
create table {CRM} (user_id int primary key, email text, segment text, lifetime_value numeric(18, 2), order_count int,
                    owner text default 'app')"""


def people(*rows: tuple[int, str, str]) -> str:
    values = ", ".join(f"({u}, '{e}', '{s}', {u}.50::decimal(18, 2), {u})" for u, e, s in rows)
    return f"select * from (values {values}) t(user_id, email, segment, lifetime_value, order_count)"


def ok(result: SyncResult) -> dict[str, int]:
    assert result.error is None, result.error
    return {k: v for k, v in result.counts.as_dict().items() if v}


def held(h: Harness) -> set[tuple[Any, ...]]:
    return set(h.sql(f"select user_id, email, segment, owner from {CRM}"))


def test_create_only_never_touches_a_row_that_was_there(harness: Harness) -> None:
    harness.sql(DDL)
    harness.sql(f"insert into {CRM} (user_id, email, segment, owner) values (1, 'app@x', 'vip', 'sales')")
    spec = harness.variant("shop_things", "create_only", "segments", target=CRM, primary_key=["user_id"],
                           columns=None, match="create_only", batch_rows=1000)  # fmt: skip
    harness.model("segments", people((1, "a@x", "regular"), (2, "b@x", "regular"), (3, "c@x", "regular")))
    assert ok(harness.run(spec)) == {"read": 3, "inserted": 2, "skipped": 1}
    assert held(harness) == {(1, "app@x", "vip", "sales"), (2, "b@x", "regular", "app"), (3, "c@x", "regular", "app")}
    assert harness.owned("create_only") == [(2,), (3,)]  # the row that was there is not the sync's
    harness.model("segments", people((1, "a@x", "gold"), (2, "b@x", "gold")))  # 3 dropped, 1 and 2 changed
    again = ok(harness.run(spec))
    assert again == {"read": 2, "skipped": 2, "deleted": 1}  # mirror deletes what it created, updates nothing
    assert held(harness) == {(1, "app@x", "vip", "sales"), (2, "b@x", "regular", "app")}


def test_update_only_never_creates_a_row(harness: Harness) -> None:
    harness.sql(DDL)
    harness.sql(
        f"insert into {CRM} (user_id, email, segment, lifetime_value, order_count) "
        "values (1, 'old@x', 'new_user', 1.50, 1), (2, 'b@x', 'regular', 2.50, 2)"  # 2 as the mart has it
    )
    spec = harness.variant(
        "crm_segments", "update_only", "segments", target=CRM, match="update_only", track_changes=None
    )
    harness.model("segments", people((1, "a@x", "regular"), (2, "b@x", "regular"), (3, "c@x", "regular")))
    assert ok(harness.run(spec)) == {"read": 3, "updated": 1, "unchanged": 1, "skipped": 1}
    assert held(harness) == {(1, "a@x", "regular", "app"), (2, "b@x", "regular", "app")}
    assert harness.owned("update_only") == [(1,), (2,)]
    harness.sql(f"insert into {CRM} (user_id, email, segment) values (3, 'typed@x', 'regular')")  # the app creates 3
    assert ok(harness.run(spec)) == {"read": 3, "updated": 1, "unchanged": 2}
    assert held(harness) == {(1, "a@x", "regular", "app"), (2, "b@x", "regular", "app"), (3, "c@x", "regular", "app")}


def test_fill_empty_leaves_a_field_a_person_filled(harness: Harness) -> None:
    harness.sql(DDL)
    spec = harness.variant("crm_segments", "fill", "segments", target=CRM, fill_empty=["segment"], track_changes=None)
    harness.model("segments", people((1, "a@x", "regular"), (2, "b@x", "regular")))
    assert ok(harness.run(spec)) == {"read": 2, "inserted": 2}
    harness.sql(f"update {CRM} set segment = 'vip (call first)' where user_id = 1")  # a person's edit
    harness.sql(f"update {CRM} set segment = null where user_id = 2")  # emptied: to be filled again
    harness.model("segments", people((1, "a2@x", "at_risk"), (2, "b@x", "at_risk")))
    result = ok(harness.run(spec))
    assert result == {"read": 2, "updated": 2}
    assert held(harness) == {(1, "a2@x", "vip (call first)", "app"), (2, "b@x", "at_risk", "app")}
    quiet = ok(harness.run(spec))  # the person's value is not drift: nothing to heal
    assert quiet == {"read": 2, "unchanged": 2}
    assert held(harness) == {(1, "a2@x", "vip (call first)", "app"), (2, "b@x", "at_risk", "app")}


@pytest.mark.parametrize("match", ["create_only", "update_only"])
def test_redis_policies_use_set_nx_and_xx(harness: Harness, redis_client: redis.Redis, match: str) -> None:
    redis_client.set("profile:1", '{"set by": "the app"}')
    spec = harness.variant("profile_cache", match, "segments", match=match)
    harness.model("segments", people((1, "a@x", "regular"), (2, "b@x", "regular")))
    counts = ok(harness.run(spec))
    values = {k.decode(): json.loads(v) for k in redis_client.keys("profile:*") if (v := redis_client.get(k))}
    if match == "create_only":
        assert counts == {"read": 2, "inserted": 1, "skipped": 1}
        assert values["profile:1"] == {"set by": "the app"} and values["profile:2"]["email"] == "b@x"
        assert harness.owned(match) == [("profile:2",)]
    else:
        assert counts == {"read": 2, "updated": 1, "skipped": 1}
        assert set(values) == {"profile:1"} and values["profile:1"]["email"] == "a@x"
        assert harness.owned(match) == [("profile:1",)]
    again = ok(harness.run(spec))
    assert again.get("inserted", 0) + again.get("updated", 0) == 0


def test_destination_tests_fail_the_run_and_leave_postgres_as_it_was(harness: Harness) -> None:
    harness.sql(DDL)
    tests = {"row_count": {"within_pct": 10}, "unique": ["email"], "not_null": ["email"]}
    spec = harness.variant("crm_segments", "tested", "segments", target=CRM, track_changes=None, tests=tests)
    harness.model("segments", people((1, "a@x", "regular"), (2, "b@x", "regular")))
    assert ok(harness.run(spec)) == {"read": 2, "inserted": 2}
    before = held(harness)

    harness.model("segments", "select * from (" + people((1, "a@x", "regular"), (2, "b@x", "gold")) + ") union all "
                  "select 3, null, 'regular', 3.50, 3")  # fmt: skip
    failed = harness.run(spec)
    assert failed.status == "failed" and "not_null(email): 1 rows have no value" in (failed.error or "")
    assert "nothing was committed" in (failed.error or "")
    assert held(harness) == before  # rolled back: neither the NULL row nor the change
    assert harness.sql("select status, error like '%%destination tests failed%%' from reverse_etl.runs "
                       "where run_id = %s", (failed.run_id,)) == [("failed", True)]  # fmt: skip

    harness.sql(
        f"insert into {CRM} (user_id, email) select 100 + g, 'a@x' from generate_series(1, 5) g"
    )  # someone's rows
    harness.model("segments", people((1, "a@x", "regular"), (2, "b@x", "gold")))
    both = harness.run(spec)
    assert "row_count: crm.policy holds 7 rows, the mart 2 records" in (both.error or "")
    assert "unique(email): 5 rows repeat a value" in (both.error or "")
    harness.sql(f"delete from {CRM} where user_id > 100")
    assert ok(harness.run(spec)) == {"read": 2, "updated": 1, "unchanged": 1}


def test_a_redis_row_count_test(harness: Harness, redis_client: redis.Redis) -> None:
    spec = harness.variant("profile_cache", "counted", "segments", tests={"row_count": {"within_pct": 0}})
    harness.model("segments", people((1, "a@x", "regular"), (2, "b@x", "regular")))
    assert ok(harness.run(spec))["inserted"] == 2  # both keys there: 0 % apart
