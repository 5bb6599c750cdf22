"""Incremental silver gives the same rows as a full refresh.

Bronze arrives in two increments, the way the file loader appends it. The second one brings a new
file with an *earlier* copy of a record built before (the original moves), a landed file that
changed (one record corrected, one gone: the loader replaced the file's rows; a later copy of the
one gone elsewhere becomes the original), a catalog item that was unknown before, a file the loader
dropped (its later copy elsewhere becomes the original) and a file it moved (its rows now carry the
new path). Each file
built earlier can only be revisited through one of orders_clean's rules. After the incremental build, a `--full-refresh` of the
same warehouse must give exactly the same silver rows (gold and marts are tables over silver).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests import bronze_sample
from tests.bronze_sample import CLICK_FILES, ITEMS, ORDER_FILES
from tests.dbt_support import (
    ORDER_FIELDS,
    DbtProject,
    Warehouse,
    base_environment,
    delete_raw_rows,
    load_raw_tables,
    query_duckdb,
)

FIRST_LOAD = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
LATER_FIRST_LOAD = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
SECOND_LOAD = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
NOV18_ORDERS, NOV19_ORDERS, NOV21_ORDERS = ORDER_FILES
NOV18_CLICKS, NOV21_CLICKS = CLICK_FILES
NOV17_ORDERS = "orders/dt=2026-11-17/part-0.jsonl"
# an order of an item the catalog does not know yet, and a later copy of an order of the 15th
NOV17_RECORDS = [
    ("orders-9-1", "o-17", "12", "777", "s-17", "1", "7.00", "EUR", "2026-11-17T10:00:00Z", "2026-11-17T10:00:01Z"),
    ("orders-9-2", "o-15", "12", "1", "s-15", "1", "20.00", "EUR", "2026-11-15T10:00:00Z", "2026-11-17T10:00:00Z"),
]
# never revisited: only read to rank the copy above when the 17th's file is rebuilt
NOV15_ORDERS = "orders/dt=2026-11-15/part-0.jsonl"
NOV15_RECORDS = [
    ("orders-9-2", "o-15", "12", "1", "s-15", "1", "20.00", "EUR", "2026-11-15T10:00:00Z", "2026-11-15T10:00:01Z")
]
# a later copy of orders-3-2, which the 21st's file will lose when it is delivered again
NOV16_ORDERS = "orders/dt=2026-11-16/part-0.jsonl"
NOV16_RECORDS = [
    ("orders-3-2", "o-12", "12", "1", "s-12", "1", "20.01", "EUR", "2026-11-21T18:00:00", "2026-11-21T20:00:00Z")
]
# the original of orders-9-5, and a later copy in a file that nothing else revisits: when the loader
# drops the first file (deleted_files: drop), the copy becomes the original
NOV14_ORDERS = "orders/dt=2026-11-14/part-0.jsonl"
NOV14_RECORDS = [
    ("orders-9-5", "o-19", "12", "1", "s-19", "1", "20.00", "EUR", "2026-11-14T10:00:00Z", "2026-11-14T10:00:01Z")
]
NOV12_ORDERS = "orders/dt=2026-11-12/part-0.jsonl"
NOV12_RECORDS = [
    ("orders-9-5", "o-19", "12", "1", "s-19", "1", "20.00", "EUR", "2026-11-14T10:00:00Z", "2026-11-15T00:00:00Z")
]
# where the loader moves the 15th's file (a rename recognized by content: its rows follow it)
MOVED_NOV15 = "orders/archive/2026-11-15.jsonl"
SILVER = ("--select", "+path:models/silver")


def _first_increment() -> dict[tuple[str, str], list[dict[str, object]]]:
    """The 18th's files, then the 21st's orders an hour later: the 18th's file is *not* the last one
    loaded, so only the rules below can make the incremental build revisit it."""
    return {
        ("raw_app", "users"): bronze_sample.user_rows(FIRST_LOAD),
        ("raw_catalog", "items"): bronze_sample.item_rows([i for i in ITEMS if i[0] != 6], FIRST_LOAD),
        ("bronze", "orders"): bronze_sample.order_rows([NOV18_ORDERS], FIRST_LOAD)
        + bronze_sample.event_rows(
            ORDER_FIELDS,
            {
                NOV17_ORDERS: NOV17_RECORDS,
                NOV16_ORDERS: NOV16_RECORDS,
                NOV15_ORDERS: NOV15_RECORDS,
                NOV14_ORDERS: NOV14_RECORDS,
                NOV12_ORDERS: NOV12_RECORDS,
            },
            FIRST_LOAD,
        )
        + bronze_sample.order_rows([NOV21_ORDERS], LATER_FIRST_LOAD),
        ("bronze", "clicks"): bronze_sample.click_rows([NOV18_CLICKS], FIRST_LOAD),
    }


def _changed_nov21_orders() -> list[tuple[str | None, ...]]:
    """The 21st's file delivered again: orders-3-1's quantity corrected, orders-3-2 gone."""
    records = list(ORDER_FILES[NOV21_ORDERS])
    quantity = ORDER_FIELDS.index("quantity")
    assert records[0][0] == "orders-3-1" and records[1][0] == "orders-3-2"
    records[0] = (*records[0][:quantity], "2", *records[0][quantity + 1 :])
    del records[1]
    return records


def _second_increment() -> dict[tuple[str, str], list[dict[str, object]]]:
    """The 19th's orders (an earlier copy of orders-0-3 among them), the 21st's orders again
    (changed), the 21st's clicks, and catalog items 6 and 777, unknown so far."""
    new_items = [i for i in ITEMS if i[0] == 6] + [(777, "Mystery box", "toys", "7.00", 1, True, False)]
    changed = {NOV21_ORDERS: _changed_nov21_orders()}
    return {
        ("raw_catalog", "items"): bronze_sample.item_rows(new_items, SECOND_LOAD),
        ("bronze", "orders"): bronze_sample.order_rows([NOV19_ORDERS], SECOND_LOAD)
        + bronze_sample.event_rows(ORDER_FIELDS, changed, SECOND_LOAD),
        ("bronze", "clicks"): bronze_sample.click_rows([NOV21_CLICKS], SECOND_LOAD),
    }


def _silver_orders(project: DbtProject, warehouse: Warehouse, source_file: str) -> dict[int, dict[str, object]]:
    """Silver rows of one landed orders file, by line."""
    relation = next(r for r in project.relations(("model",)) if r.name == "orders_clean")
    columns, rows = warehouse.rows(relation)
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    return {int(r["source_line"]): r for r in records if r["source_file"] == source_file}  # type: ignore[call-overload]


def _flags(project: DbtProject, warehouse: Warehouse, source_file: str, line: int) -> tuple[object, object]:
    """(is_duplicate, validation_errors) of an order record in silver."""
    record = _silver_orders(project, warehouse, source_file)[line]
    return record["is_duplicate"], record["validation_errors"]


def _silver_rows(project: DbtProject, warehouse: Warehouse) -> dict[str, object]:
    return {r.name: warehouse.rows(r) for r in project.relations(("model",)) if r.schema == "silver"}


@pytest.mark.slow  # builds the project three times (full, incremental, full again): ~20 s
@pytest.mark.parametrize("target", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_incremental_build_equals_full_refresh(target: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    duckdb_path = tmp_path / "warehouse.duckdb"
    if target == "postgres":
        endpoint = request.getfixturevalue("pg_database")
        warehouse = Warehouse(duckdb_path, endpoint.url())
        project = DbtProject(tmp_path / "target", base_environment(duckdb_path, endpoint.dbt_env()))
    else:
        warehouse = Warehouse(duckdb_path)
        project = DbtProject(tmp_path / "target", base_environment(duckdb_path))

    load_raw_tables(duckdb_path, _first_increment())
    warehouse.sync_raw_tables()
    project.run("run", *SILVER, target=target)
    # before the earlier copy of orders-0-3 and item 777 arrive
    assert _flags(project, warehouse, NOV18_ORDERS, 3) == (False, None)
    assert _flags(project, warehouse, NOV17_ORDERS, 1) == (False, "unknown_item")
    assert _flags(project, warehouse, NOV16_ORDERS, 1) == (True, None)
    assert _flags(project, warehouse, NOV17_ORDERS, 2) == (True, None)
    assert _flags(project, warehouse, NOV12_ORDERS, 1) == (True, None)

    delete_raw_rows(duckdb_path, "bronze", "orders", f"_source_file = '{NOV21_ORDERS}'")
    delete_raw_rows(duckdb_path, "bronze", "orders", f"_source_file = '{NOV14_ORDERS}'")  # dropped with its file
    query_duckdb(  # renamed: its rows follow the file, loaded_at unchanged
        duckdb_path,
        f"update bronze.orders set _source_file = '{MOVED_NOV15}' where _source_file = '{NOV15_ORDERS}'",
        read_only=False,
    )
    load_raw_tables(duckdb_path, _second_increment())
    warehouse.sync_raw_tables()
    project.forget_executed_sql()
    project.run("run", *SILVER, target=target)
    executed = project.executed_sql()
    assert "files_to_rebuild" in executed and "delete from" in executed, "silver was not built incrementally"
    assert _flags(project, warehouse, NOV18_ORDERS, 3) == (True, None), "an earlier copy landing later is the original"
    assert _flags(project, warehouse, NOV17_ORDERS, 1) == (False, None), "the item is in the catalog now"
    assert _flags(project, warehouse, NOV16_ORDERS, 1) == (False, None), "its earlier copy is gone"
    assert _flags(project, warehouse, NOV17_ORDERS, 2) == (True, None), "ranked against a file not rebuilt"
    nov21 = _silver_orders(project, warehouse, NOV21_ORDERS)
    assert sorted(nov21) == [1, 2, 3], "the record gone from the reloaded file is gone from silver"
    assert (nov21[1]["quantity"], nov21[1]["amount"]) == (2, Decimal("60")), "the corrected record replaced the old"
    assert _flags(project, warehouse, NOV12_ORDERS, 1) == (False, None), "its original left with its file"
    assert _silver_orders(project, warehouse, NOV14_ORDERS) == {}, "a dropped file leaves silver"
    assert _silver_orders(project, warehouse, NOV15_ORDERS) == {}, "a moved file's rows carry its new path"
    assert sorted(_silver_orders(project, warehouse, MOVED_NOV15)) == [1]

    incremental = _silver_rows(project, warehouse)
    project.run("run", "--full-refresh", *SILVER, target=target)
    full_refresh = _silver_rows(project, warehouse)

    assert incremental.keys() == full_refresh.keys() == {"orders_clean", "clicks_clean"}
    for name, rows in incremental.items():
        assert rows == full_refresh[name], name
    _, orders = incremental["orders_clean"]  # type: ignore[misc]
    assert (
        len(orders)
        == sum(len(v) for v in ORDER_FILES.values())
        + len(NOV17_RECORDS)
        + len(NOV16_RECORDS)
        + len(NOV15_RECORDS)
        + len(NOV12_RECORDS)
        - 1
    )
    _, clicks = incremental["clicks_clean"]  # type: ignore[misc]
    assert len(clicks) == sum(len(v) for v in CLICK_FILES.values())
