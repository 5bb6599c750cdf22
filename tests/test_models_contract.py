"""The data contract (docs/contract.md) on a hand-written bronze set (tests/bronze_sample.py).

`dbt build` on a fresh DuckDB warehouse, then every silver and gold row is compared with the rows
written out below, worked out by hand from the contract. The same raw rows are then built on the
real Postgres, and every relation (models, seeds, snapshots) must hold the same rows there.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest

from roundtrip.dev.services import PostgresEndpoint
from tests import bronze_sample
from tests.dbt_support import (
    DbtProject,
    base_environment,
    canonical_rows,
    copy_raw_tables_to_postgres,
    duckdb_relation_rows,
    load_raw_tables,
    postgres_relation_rows,
    query_duckdb,
)

A = "orders/dt=2026-11-18/part-0.jsonl"
B = "orders/dt=2026-11-19/part-0.jsonl"
C = "orders/dt=2026-11-21/part-0.jsonl"
K = "clicks/dt=2026-11-18/part-0.jsonl"
L = "clicks/dt=2026-11-21/part-0.jsonl"
NOV18, NOV19, NOV21 = date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 21)
LAMP, NOVEL, GUITAR, ADULT, SCARF = "Crème lamp", "L'Original novel", "Mini guitar", "Adult thing", 'Vintage "scarf"'
TEAPOT = "Handmade teapot"


def T(text: str) -> datetime:  # short: it reads like a literal in the tables below
    return datetime.fromisoformat(text)


ORDERS_CLEAN_COLUMNS = (
    "source_file, source_line, ingestion_id, order_id, user_id, item_id, session_id, quantity, unit_price, "
    "currency, event_ts, event_date, ingested_at, amount, item_title, category, is_duplicate, validation_errors, "
    "is_valid"
)
EUR = "EUR"
# fmt: off
EXPECTED_ORDERS_CLEAN = [
    (A, 1, "orders-0-1", "o-1", 10, 1, "s-1", 2, D("20.00"), EUR, T("2026-11-18 10:00:00"), NOV18, T("2026-11-18 10:00:05"), D("40.00"), LAMP, "home", False, None, True),
    (A, 2, "orders-0-2", "o-1", 10, 5, "s-1", 1, D("30.00"), EUR, T("2026-11-18 10:00:00"), NOV18, T("2026-11-18 10:00:06"), D("30.00"), SCARF, "fashion", False, None, True),
    (A, 3, "orders-0-3", "o-2", 11, 1, "s-2", 1, D("20.00"), EUR, T("2026-11-18 23:30:00"), NOV18, T("2026-11-18 23:30:10"), D("20.00"), LAMP, "home", True, None, True),
    (A, 4, "orders-0-1", "o-1", 10, 1, "s-1", 2, D("20.00"), EUR, T("2026-11-18 10:00:00"), NOV18, T("2026-11-18 12:00:00"), D("40.00"), LAMP, "home", True, None, True),
    (A, 5, None, "o-3", 12, 5, "s-3", 1, D("30.00"), EUR, T("2026-11-18 15:00:00"), NOV18, T("2026-11-18 15:00:01"), D("30.00"), SCARF, "fashion", False, None, True),
    (A, 6, None, "o-3", 12, 5, "s-3", 1, D("30.00"), EUR, T("2026-11-18 15:00:00"), NOV18, T("2026-11-18 15:00:01"), D("30.00"), SCARF, "fashion", False, None, True),
    (A, 7, "orders-0-7", None, 10, 1, "s-1", 1, D("20.00"), EUR, T("2026-11-18 10:05:00"), NOV18, T("2026-11-18 10:05:01"), D("20.00"), LAMP, "home", False, "missing_order_id", False),
    (A, 8, "orders-0-8", "o-4", None, None, "s-4", 0, D("-1.00"), EUR, None, None, T("2026-11-18 10:06:00"), D("0.00"), None, None, False,
     "missing_user_id,missing_item_id,invalid_event_ts,invalid_quantity,invalid_price", False),
    (A, 9, "orders-0-9", "o-5", 10, 1, "s-5", 1, D("10000.00"), EUR, T("2026-11-18 11:00:00"), NOV18, T("2026-11-18 11:00:01"), D("10000.00"), LAMP, "home", False, "invalid_price", False),
    (A, 10, "orders-0-10", "o-6", 12, 999, "s-6", 1, D("5.00"), EUR, T("2026-11-18 12:00:00"), NOV18, T("2026-11-18 12:00:01"), D("5.00"), None, None, False, "unknown_item", False),
    (A, 11, "orders-0-11", "o-7", 12, 1, "s-7", None, D("20.00"), EUR, T("2026-11-18 13:00:00"), NOV18, T("2026-11-18 13:00:01"), None, LAMP, "home", False, "invalid_quantity", False),
    (A, 12, "orders-0-12", "o-8x", 12, 1, "s-7", None, None, EUR, None, None, T("2026-11-18 13:30:00"), None, LAMP, "home", False,
     "invalid_event_ts,invalid_quantity,invalid_price", False),
    (A, 13, "orders-0-13", "o-13", 13, 4, "s-13", 1, D("9999.99"), EUR, T("2026-11-18 15:30:00.5"), NOV18, T("2026-11-18 15:30:01"), D("9999.99"), ADULT, "beauty", False, None, True),
    (A, 14, "orders-0-14", "o-15", 12, 5, "s-15", 1, D("30.00"), None, T("2026-11-18 16:00:00"), NOV18, T("2026-11-18 16:00:01"), D("30.00"), SCARF, "fashion", False, "missing_fields", False),
    (B, 1, "orders-1-1", "o-8", 11, 2, "s-8", 1, D("10.00"), EUR, T("2026-11-19 09:00:00"), NOV19, T("2026-11-19 09:00:05"), D("10.00"), NOVEL, "books", False, None, True),
    (B, 2, "orders-1-1", "o-8", 11, 2, "s-8", 1, D("10.00"), EUR, T("2026-11-19 09:00:00"), NOV19, T("2026-11-19 09:00:05"), D("10.00"), NOVEL, "books", True, None, True),
    (B, 3, "orders-1-3", "o-9", 12, 5, "s-9", 2, D("30.00"), EUR, T("2026-11-19 20:00:00"), NOV19, T("2026-11-19 20:00:01"), D("60.00"), SCARF, "fashion", False, None, True),
    (B, 4, "orders-1-3", "o-9", 12, 5, "s-9", 2, D("30.00"), EUR, T("2026-11-19 20:00:00"), NOV19, T("2026-11-19 20:00:01"), D("60.00"), SCARF, "fashion", True, None, True),
    (B, 5, "orders-1-5", "o-10", 10, 1, "s-10", 1, D("20.00"), EUR, T("2026-11-19 08:15:00.123456"), NOV19, T("2026-11-19 08:15:01"), D("20.00"), LAMP, "home", False, None, True),
    (B, 6, "orders-0-3", "o-2", 11, 1, "s-2", 1, D("20.00"), EUR, T("2026-11-18 23:30:00"), NOV18, T("2026-11-18 23:30:09"), D("20.00"), LAMP, "home", False, None, True),
    (C, 1, "orders-3-1", "o-11", 10, 5, "s-11", 3, D("30.00"), EUR, T("2026-11-21 14:00:00"), NOV21, T("2026-11-21 14:00:02"), D("90.00"), SCARF, "fashion", False, None, True),
    (C, 2, "orders-3-2", "o-12", 12, 1, "s-12", 1, D("20.01"), EUR, T("2026-11-21 18:00:00"), NOV21, T("2026-11-21 18:00:01"), D("20.01"), LAMP, "home", False, None, True),
    (C, 3, "orders-3-3", "o-11", 10, 6, "s-11", 1, D("5.00"), EUR, T("2026-11-21 14:00:00"), NOV21, T("2026-11-21 14:00:03"), D("5.00"), TEAPOT, "home", False, None, True),
    (C, 4, "orders-3-4", "o-14", 14, 1, "s-14", 1, D("20.00"), EUR, T("2026-11-21 18:30:00"), NOV21, T("2026-11-21 18:30:01"), D("20.00"), LAMP, "home", False, None, True),
]

CLICKS_CLEAN_COLUMNS = (
    "source_file, source_line, ingestion_id, event_id, session_id, user_id, item_id, event_type, search_query, "
    "event_ts, event_date, ingested_at, is_duplicate, validation_errors, is_valid"
)
EXPECTED_CLICKS_CLEAN = [
    (K, 1, "clicks-0-1", "e-1", "s-1", 10, None, "search", 'crème "lamp"', T("2026-11-18 09:58:00"), NOV18, T("2026-11-18 09:58:01"), False, None, True),
    (K, 2, "clicks-0-2", "e-2", "s-1", 10, 1, "view", None, T("2026-11-18 09:58:30"), NOV18, T("2026-11-18 09:58:31"), False, None, True),
    (K, 3, "clicks-0-3", "e-3", "s-1", 10, 1, "click", None, T("2026-11-18 09:59:00"), NOV18, T("2026-11-18 09:59:01"), False, None, True),
    (K, 4, "clicks-0-4", "e-4", "s-1", 10, 1, "add_to_cart", None, T("2026-11-18 09:59:30"), NOV18, T("2026-11-18 09:59:31"), False, None, True),
    (K, 5, "clicks-0-2", "e-2", "s-1", 10, 1, "view", None, T("2026-11-18 09:58:30"), NOV18, T("2026-11-18 11:00:00"), True, None, True),
    (K, 6, "clicks-0-6", "e-6", "s-2", 11, 1, "view", None, T("2026-11-18 23:20:00"), NOV18, T("2026-11-18 23:20:01"), False, None, True),
    (K, 7, "clicks-0-7", "e-7", "s-2", 11, 2, "view", None, T("2026-11-19 00:10:00"), NOV19, T("2026-11-19 00:10:01"), False, None, True),
    (K, 8, "clicks-0-8", "e-8", "s-3", 12, 5, "VIEW", None, T("2026-11-18 14:01:00"), NOV18, T("2026-11-18 14:01:01"), False, "invalid_event_type", False),
    (K, 9, "clicks-0-9", "e-9", "s-3", 12, None, None, None, T("2026-11-18 14:02:00"), NOV18, T("2026-11-18 14:02:01"), False, "invalid_event_type,missing_item_id", False),
    (K, 10, "clicks-0-10", None, None, 12, 5, "view", None, T("2026-11-18 14:03:00"), NOV18, T("2026-11-18 14:03:01"), False, "missing_event_id,missing_session_id", False),
    (K, 11, "clicks-0-11", "e-11", "s-3", None, 5, "view", None, T("2026-11-18 14:04:00"), NOV18, T("2026-11-18 14:04:01"), False, "missing_user_id", False),
    (K, 12, "clicks-0-12", "e-12", "s-3", 12, None, "view", None, T("2026-11-18 14:05:00"), NOV18, T("2026-11-18 14:05:01"), False, "missing_item_id", False),
    (K, 13, "clicks-0-13", "e-13", "s-3", 12, 5, "view", None, None, None, T("2026-11-18 14:06:01"), False, "invalid_event_ts", False),
    (K, 14, None, "e-14", "s-3", 12, None, "search", "back\\slash", T("2026-11-18 14:00:00"), NOV18, T("2026-11-18 14:00:01"), False, None, True),
    (K, 15, "clicks-0-15", "e-15", "s-3", 12, 5, "view", None, T("2026-11-18 14:10:00"), NOV18, T("2026-11-18 14:10:01"), False, None, True),
    (K, 16, "clicks-0-15", "e-16", "s-3", 12, 5, "view", None, T("2026-11-18 14:10:00"), NOV18, T("2026-11-18 14:10:01"), True, None, True),
    (K, 17, "clicks-0-17", "e-17", "s-3", 12, 5, "add_to_cart", None, T("2026-11-18 14:11:00"), NOV18, T("2026-11-18 14:11:01"), False, None, True),
    (K, 18, "clicks-0-18", "e-18", "s-3", 12, 1, "view", None, T("2026-11-18 14:20:00"), NOV18, T("2026-11-18 14:20:01"), False, None, True),
    (K, 19, None, "e-19", "s-3", 12, 1, "view", None, T("2026-11-18 14:21:00"), NOV18, T("2026-11-18 14:21:01"), False, "missing_fields", False),
    (L, 1, "clicks-3-1", "e-21", "s-20", 12, None, "search", "café crème", T("2026-11-21 17:00:00"), NOV21, T("2026-11-21 17:00:01"), False, None, True),
    (L, 2, "clicks-3-2", "e-22", "s-21", 13, None, "search", "yoga mat 🧘", T("2026-11-21 17:30:00"), NOV21, T("2026-11-21 17:30:01"), False, None, True),
    (L, 3, "clicks-3-3", "e-23", "s-21", 13, 3, "view", None, T("2026-11-21 17:31:00"), NOV21, T("2026-11-21 17:31:01"), False, None, True),
    (L, 4, "clicks-3-4", "e-24", "s-22", 10, 999, "view", None, T("2026-11-21 19:00:00"), NOV21, T("2026-11-21 19:00:01"), False, None, True),
]

EXPECTED_DAILY_GMV_METRICS = [
    # event_date, gmv, order_count, items_sold, unique_users, avg_order_value, new_users, returning_users, gmv_growth_pct
    (NOV18, D("10149.99"), 4, 7, 4, D("2537.50"), 4, 0, None),
    (NOV19, D("90.00"), 3, 4, 3, D("30.00"), 0, 3, D("-99.11")),
    (NOV21, D("135.01"), 3, 6, 3, D("45.00"), 1, 2, None),  # no row on the 20th: no growth
]

EXPECTED_ITEM_PERFORMANCE = [
    # event_date, item_id, item_title, category, views, clicks, add_to_carts, orders, units_sold, revenue, ctr, conversion
    (NOV18, 1, LAMP, "home", 3, 1, 1, 2, 3, D("60.00"), D("0.3333"), D("0.6667")),
    (NOV18, 4, ADULT, "beauty", 0, 0, 0, 1, 1, D("9999.99"), None, None),
    (NOV18, 5, SCARF, "fashion", 1, 0, 1, 2, 3, D("90.00"), D("0.0000"), D("2.0000")),
    (NOV19, 1, LAMP, "home", 0, 0, 0, 1, 1, D("20.00"), None, None),
    (NOV19, 2, NOVEL, "books", 1, 0, 0, 1, 1, D("10.00"), D("0.0000"), D("1.0000")),
    (NOV19, 5, SCARF, "fashion", 0, 0, 0, 1, 2, D("60.00"), None, None),
    (NOV21, 1, LAMP, "home", 0, 0, 0, 2, 2, D("40.01"), None, None),
    (NOV21, 3, GUITAR, "music", 1, 0, 0, 0, 0, D("0.00"), D("0.0000"), D("0.0000")),
    (NOV21, 5, SCARF, "fashion", 0, 0, 0, 1, 3, D("90.00"), None, None),
    (NOV21, 6, TEAPOT, "home", 0, 0, 0, 1, 1, D("5.00"), None, None),
    (NOV21, 999, None, None, 1, 0, 0, 0, 0, D("0.00"), D("0.0000"), D("0.0000")),
]

EXPECTED_USER_FUNNEL_METRICS = [
    # event_date, sessions, search, view, click, add_to_cart, order sessions, active_users, session_conversion_rate
    (NOV18, 4, 2, 3, 1, 2, 4, 4, D("1.0000")),
    (NOV19, 4, 0, 1, 0, 0, 3, 3, D("0.7500")),  # s-2 crossed midnight: it counts on both days
    (NOV21, 6, 2, 2, 0, 0, 3, 4, D("0.5000")),
]

EXPECTED_HOURLY_ORDER_PATTERNS = [
    # day_of_week, day_name, hour_of_day, order_count, items_sold, gmv, active_days, avg_orders_per_day, share %
    (3, "Wednesday", 10, 1, 3, D("70.00"), 1, D("1.00"), D("10.00")),
    (3, "Wednesday", 15, 2, 3, D("10059.99"), 1, D("2.00"), D("20.00")),
    (3, "Wednesday", 23, 1, 1, D("20.00"), 1, D("1.00"), D("10.00")),
    (4, "Thursday", 8, 1, 1, D("20.00"), 1, D("1.00"), D("10.00")),
    (4, "Thursday", 9, 1, 1, D("10.00"), 1, D("1.00"), D("10.00")),
    (4, "Thursday", 20, 1, 2, D("60.00"), 1, D("1.00"), D("10.00")),
    (6, "Saturday", 14, 1, 4, D("95.00"), 1, D("1.00"), D("10.00")),
    (6, "Saturday", 18, 2, 2, D("40.01"), 1, D("2.00"), D("20.00")),
]
# fmt: on


@pytest.fixture(scope="module")
def built_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, DbtProject]]:
    """The hand-written bronze set in a fresh DuckDB warehouse, after `dbt build`."""
    folder = tmp_path_factory.mktemp("contract")
    warehouse = folder / "warehouse.duckdb"
    load_raw_tables(warehouse, bronze_sample.all_raw_rows())
    project = DbtProject(folder / "target", base_environment(warehouse))
    project.run("build")
    yield warehouse, project


def _rows(warehouse: Path, relation: str, columns: str) -> list[tuple[object, ...]]:
    return canonical_rows(query_duckdb(warehouse, f"select {columns} from {relation}"))


@pytest.mark.parametrize(
    ("relation", "columns", "expected"),
    [
        ("silver.orders_clean", ORDERS_CLEAN_COLUMNS, EXPECTED_ORDERS_CLEAN),
        ("silver.clicks_clean", CLICKS_CLEAN_COLUMNS, EXPECTED_CLICKS_CLEAN),
        ("gold.daily_gmv_metrics", "*", EXPECTED_DAILY_GMV_METRICS),
        ("gold.item_performance", "*", EXPECTED_ITEM_PERFORMANCE),
        ("gold.user_funnel_metrics", "*", EXPECTED_USER_FUNNEL_METRICS),
        ("gold.hourly_order_patterns", "*", EXPECTED_HOURLY_ORDER_PATTERNS),
    ],
    ids=lambda v: v if isinstance(v, str) and "." in v else "",
)
def test_contract_rows(
    built_warehouse: tuple[Path, DbtProject], relation: str, columns: str, expected: list[tuple[object, ...]]
) -> None:
    warehouse, _ = built_warehouse
    assert _rows(warehouse, relation, columns) == canonical_rows(expected)


def test_silver_keeps_every_bronze_record_and_its_load_time(built_warehouse: tuple[Path, DbtProject]) -> None:
    warehouse, _ = built_warehouse
    for table, records in (("orders", bronze_sample.order_rows()), ("clicks", bronze_sample.click_rows())):
        loaded = query_duckdb(warehouse, f"select distinct loaded_at from silver.{table}_clean")
        assert [canonical_rows(loaded)] == [[(bronze_sample.LOADED_AT.replace(tzinfo=None),)]]
        assert query_duckdb(warehouse, f"select count(*) from silver.{table}_clean") == [(len(records),)]


def test_iris_codes_stay_text_through_the_marts(built_warehouse: tuple[Path, DbtProject]) -> None:
    warehouse, _ = built_warehouse
    rows = query_duckdb(
        warehouse,
        "select user_id, iris_code, department_code, region_name from marts.enriched_user "
        "where user_id in (10, 11, 14) order by user_id",
    )
    assert rows == [
        (10, "2A0040101", "2A", "Corse"),
        (11, "060880101", "06", "Provence-Alpes-Côte d'Azur"),
        (14, "2B0330101", "2B", "Corse"),
    ]


def test_as_of_is_the_newest_valid_event(built_warehouse: tuple[Path, DbtProject]) -> None:
    warehouse, _ = built_warehouse
    assert query_duckdb(warehouse, "select distinct as_of from marts.user_segments") == [(T("2026-11-21 19:00:00"),)]


# Gold as of 2026-11-19 09:00:00 (docs/contract.md, "as_of"): the 18th whole, the 19th up to
# 09:00:00 included (o-10 at 08:15, o-8 exactly at 09:00; not o-9 at 20:00), nothing of the 21st.
PINNED_AS_OF = "2026-11-19T09:00:00"
# fmt: off
EXPECTED_GOLD_AS_OF = {
    "daily_gmv_metrics": [
        EXPECTED_DAILY_GMV_METRICS[0],
        (NOV19, D("30.00"), 2, 2, 2, D("15.00"), 0, 2, D("-99.70")),
    ],
    "item_performance": [
        *EXPECTED_ITEM_PERFORMANCE[:3],
        (NOV19, 1, LAMP, "home", 0, 0, 0, 1, 1, D("20.00"), None, None),
        (NOV19, 2, NOVEL, "books", 1, 0, 0, 1, 1, D("10.00"), D("0.0000"), D("1.0000")),
    ],
    "user_funnel_metrics": [
        EXPECTED_USER_FUNNEL_METRICS[0],
        (NOV19, 3, 0, 1, 0, 0, 2, 2, D("0.6667")),  # s-2's midnight view, s-10 and s-8's orders
    ],
    "hourly_order_patterns": [  # 6 orders up to as_of: shares of 6
        (3, "Wednesday", 10, 1, 3, D("70.00"), 1, D("1.00"), D("16.67")),
        (3, "Wednesday", 15, 2, 3, D("10059.99"), 1, D("2.00"), D("33.33")),
        (3, "Wednesday", 23, 1, 1, D("20.00"), 1, D("1.00"), D("16.67")),
        (4, "Thursday", 8, 1, 1, D("20.00"), 1, D("1.00"), D("16.67")),
        (4, "Thursday", 9, 1, 1, D("10.00"), 1, D("1.00"), D("16.67")),
    ],
}
# fmt: on


def test_gold_counts_events_up_to_a_pinned_as_of(built_warehouse: tuple[Path, DbtProject], tmp_path: Path) -> None:
    """Gold reads int_valid_orders / int_valid_clicks, so a pinned `as_of` cuts it like the marts."""
    warehouse, _ = built_warehouse
    pinned = tmp_path / "warehouse.duckdb"  # the same file name: views name their catalog
    shutil.copyfile(warehouse, pinned)
    project = DbtProject(tmp_path / "target", base_environment(pinned))
    project.run(
        "run",
        "--select",
        "int_as_of int_valid_orders int_valid_clicks path:models/gold",
        "--vars",
        f"{{as_of: '{PINNED_AS_OF}'}}",
    )
    assert _rows(pinned, "intermediate.int_as_of", "as_of") == [(T("2026-11-19 09:00:00"),)]
    for model, expected in EXPECTED_GOLD_AS_OF.items():
        assert _rows(pinned, f"gold.{model}", "*") == canonical_rows(expected), model


@pytest.mark.postgres
def test_postgres_builds_the_same_rows_as_duckdb(
    built_warehouse: tuple[Path, DbtProject], pg_database: PostgresEndpoint, tmp_path: Path
) -> None:
    """Every model, seed and snapshot: the same rows on Postgres as on DuckDB (snapshots without
    their build-time bookkeeping columns)."""
    warehouse, duckdb_project = built_warehouse
    copy_raw_tables_to_postgres(warehouse, pg_database.url())
    project = DbtProject(tmp_path / "target", base_environment(warehouse, pg_database.dbt_env()))
    project.run("build", target="postgres")

    relations = duckdb_project.relations()
    assert len(relations) > 30
    for relation in relations:
        duck_columns, duck_rows = duckdb_relation_rows(warehouse, relation)
        pg_columns, pg_rows = postgres_relation_rows(pg_database.url(), relation)
        assert pg_columns == duck_columns, relation.name
        assert pg_rows == duck_rows, relation.name
        assert duck_rows, f"{relation.name} is empty: the comparison would prove nothing"
