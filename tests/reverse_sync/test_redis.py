"""Redis syncs on the real Redis: JSON values, TTLs, no resend of unchanged keys, mirror deletes."""

from __future__ import annotations

import json

import pytest
import redis

from reverse_etl.engine import SyncResult

from .conftest import Harness

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

RECOS = "t(user_id, item_id, score, recommendation_rank)"


def counts(result: SyncResult) -> dict[str, int]:
    assert result.error is None, result.error
    return result.counts.as_dict()


def set_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_set", {}).get("calls", 0))


def test_mirror_list_values_ttl_and_no_resend(harness: Harness, redis_client: redis.Redis) -> None:
    harness.model(
        "recos",
        f"""select * from (values (1, 10, 0.5, 2), (1, 11, 0.9, 1), (2, 10, 0.3, 1), (3, 12, 1.0, 1),
                                  (4, 13, 0.2, 1), (4, 14, 0.1, 1)) {RECOS}""",
    )
    first = harness.run("reco")  # batch_rows 3
    assert counts(first) == {
        "read": 6,
        "inserted": 3,
        "updated": 0,
        "unchanged": 0,
        "healed": 0,
        "deleted": 0,
        "rejected": 2,
        "skipped": 0,
    }
    assert sorted(redis_client.keys("reco:*")) == [b"reco:1", b"reco:2", b"reco:3"]
    assert json.loads(redis_client.get("reco:1")) == [
        {"item_id": 11, "score": 0.9, "recommendation_rank": 1},
        {"item_id": 10, "score": 0.5, "recommendation_rank": 2},
    ]
    assert 86_000 < redis_client.ttl("reco:1") <= 86_400
    rejected = harness.sql("select row_key, reason from reverse_etl.rejected_rows where run_id = %s", (first.run_id,))
    assert rejected == [({"user_id": 4, "recommendation_rank": 1}, "duplicate key: 2 rows share it")] * 2

    redis_client.expire("reco:2", 60)  # an unchanged key's TTL is renewed, not its value
    redis_client.delete("reco:3")  # evicted: written again
    sets = set_calls(redis_client)
    second = harness.run("reco")
    # reco:3 was evicted: the state said Redis held it, Redis did not: written again, counted healed
    assert counts(second) == {
        "read": 6,
        "inserted": 0,
        "updated": 0,
        "unchanged": 2,
        "healed": 1,
        "deleted": 0,
        "rejected": 2,
        "skipped": 0,
    }
    assert set_calls(redis_client) - sets == 1  # only reco:3 was sent
    assert redis_client.ttl("reco:2") > 86_000 and redis_client.exists("reco:3")

    redis_client.set("reco:99", "written by the app")
    harness.model("recos", f"select * from (values (1, 10, 0.5, 2), (1, 11, 0.9, 1), (2, 10, 0.4, 1)) {RECOS}")
    third = harness.run("reco")
    assert counts(third) == {
        "read": 3,
        "inserted": 0,
        "updated": 1,
        "unchanged": 1,
        "healed": 0,
        "deleted": 1,
        "rejected": 0,
        "skipped": 0,
    }
    assert sorted(redis_client.keys("reco:*")) == [b"reco:1", b"reco:2", b"reco:99"]
    assert json.loads(redis_client.get("reco:2")) == [{"item_id": 10, "score": 0.4, "recommendation_rank": 1}]
    assert redis_client.get("reco:99") == b"written by the app"


def test_object_values_without_ttl(harness: Harness, redis_client: redis.Redis) -> None:
    harness.model(
        "segments",
        """select * from (values (1, 'ann@example.com', 'high_value', 812.40::decimal(18, 2)),
                                 (2, 'bob@example.com', 'regular', 20.00)) t(user_id, email, segment, lifetime_value)""",
    )
    assert counts(harness.run("profile_cache"))["inserted"] == 2
    assert json.loads(redis_client.get("profile:1")) == {
        "user_id": 1,
        "email": "ann@example.com",
        "segment": "high_value",
        "lifetime_value": pytest.approx(812.40),
    }
    assert redis_client.get("profile:1").decode().endswith('"lifetime_value":812.40}')  # decimals keep their digits
    assert redis_client.ttl("profile:1") == -1  # no TTL declared
    redis_client.delete("profile:2")
    again = harness.run("profile_cache")
    assert counts(again) == {
        "read": 2,
        "inserted": 0,
        "updated": 0,
        "unchanged": 1,
        "healed": 1,
        "deleted": 0,
        "rejected": 0,
        "skipped": 0,
    }
    assert redis_client.exists("profile:2")
