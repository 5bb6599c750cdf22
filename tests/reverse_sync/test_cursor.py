"""Change detection by a cursor column, with a periodic full diff: a run reads only the rows
whose cursor reached the last run's highest value; every ``full_diff_every`` runs it reads all
of them, and finds what the cursor missed (a change that did not move it, a deleted row)."""

from __future__ import annotations

from typing import Any

import pytest

from reverse_etl.engine import SyncResult

from .conftest import Harness

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

TABLE = "crm.by_cursor"


def mart(n: int, bumped: tuple[int, ...] = (), silent: tuple[int, ...] = (), deleted: tuple[int, ...] = ()) -> str:
    """``n`` users; ``bumped`` changed with their updated_at moved on, ``silent`` changed without."""

    def row(i: int) -> str:
        segment = "'gold'" if i in bumped or i in silent else "'regular'"
        at = (
            "timestamp '2026-12-02 10:00:00'"
            if i in bumped
            else f"timestamp '2026-12-01 00:00:00' + interval ({i}) minute"
        )
        return f"({i}, 'u{i}@x', {segment}, {at})"

    values = ", ".join(row(i) for i in range(n) if i not in deleted)
    return f"select * from (values {values}) t(user_id, email, segment, updated_at)"


def ok(result: SyncResult) -> dict[str, Any]:
    assert result.error is None, result.error
    return {k: v for k, v in result.counts.as_dict().items() if v} | {"read_by": result.read_by}


def held(h: Harness) -> set[tuple[Any, ...]]:
    return set(h.sql(f"select user_id, email, segment from {TABLE}"))


def expected(h: Harness) -> set[tuple[Any, ...]]:
    import duckdb

    con = duckdb.connect(str(h.warehouse), read_only=True)
    try:
        return {tuple(r) for r in con.execute("select user_id, email, segment from marts.segments").fetchall()}
    finally:
        con.close()


def test_a_cursor_sync_reads_what_moved_and_a_full_diff_finds_the_rest(harness: Harness) -> None:
    spec = harness.variant(
        "crm_segments", "by_cursor", "segments", target=TABLE, mode="mirror", track_changes=None,
        change_detection="cursor", cursor="updated_at", full_diff_every=3, max_delete_pct=100,
    )  # fmt: skip
    harness.model("segments", mart(100))
    first = ok(harness.run(spec))
    assert first["inserted"] == 100 and first["read_by"] == "every row"

    harness.model("segments", mart(100, bumped=(5, 6), silent=(7,), deleted=(8,)))
    second = ok(harness.run(spec))  # since_full 0 -> 1: by cursor
    assert second["read"] == 3  # 5, 6 and 99 (the row at the last run's highest value)
    assert (second.get("updated"), second.get("deleted"), second.get("unchanged")) == (2, None, 98)
    assert second["read_by"].startswith("rows with updated_at >= 2026-12-01 01:39:00")
    assert (7, "u7@x", "regular") in held(harness) and (8, "u8@x", "regular") in held(harness)  # missed, for now

    third = ok(harness.run(spec))  # since_full 1 -> 2: by cursor, nothing new
    assert third["read"] == 2 and third.get("updated") is None

    fourth = ok(harness.run(spec))  # the third run since the full one: every row
    assert fourth["read_by"] == "every row"
    assert (fourth["updated"], fourth["deleted"]) == (1, 1)  # what the cursor could not see
    assert held(harness) == expected(harness)
    fifth = ok(harness.run(spec))
    assert fifth["read_by"] != "every row" and fifth.get("updated") is None

    harness.sql(f"delete from {TABLE} where user_id = 42")  # lost by hand: only a full read can send it again
    healed = ok(harness.run(spec))
    assert healed["healed"] == 1 and healed["read_by"] == "every row"
    assert held(harness) == expected(harness)
