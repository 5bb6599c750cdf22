"""The project's singular dbt tests (tests/dbt/assert_*.sql) pass on rows that keep the contract
and fail, naming the rows, on rows that break it: run by `dbt test` against hand-made tables."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import duckdb
import pytest

from tests.dbt_support import DbtProject, base_environment

ORDER_LINES = """
    create or replace table intermediate.int_valid_orders as
    select * from (values
        (1, 10, 100, 2, 19.98, date '2026-11-01'),
        (1, 10, 101, 1, 5.00,  date '2026-11-01'),
        (2, 11, 100, 1, 9.99,  date '2026-11-02')
    ) as t(order_id, user_id, item_id, quantity, amount, event_date)
"""
GOOD_GOLD = """
    create or replace table gold.daily_gmv_metrics as
    select * from (values (date '2026-11-01', 24.98, 1, 3), (date '2026-11-02', 9.99, 1, 1))
        as t(event_date, gmv, order_count, items_sold)
"""
GOOD_RECOMMENDATIONS = """
    create or replace table marts.recommendations as
    select * from (values (10, 102, 1), (11, 101, 1)) as t(user_id, item_id, recommendation_rank)
"""
GOOD = {"order lines": ORDER_LINES, "gold": GOOD_GOLD, "recommendations": GOOD_RECOMMENDATIONS}
SINGULAR = [
    "assert_daily_gmv_reconciles_with_the_valid_order_lines",
    "assert_recommendations_never_an_item_the_user_bought",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One warehouse file and target folder for the module: dbt parses once, then reuses it."""
    return tmp_path_factory.mktemp("singular")


def _test(folder: Path, statements: list[str]) -> dict[str, tuple[str, int]]:
    """Build the tables from ``statements``, run the singular tests: {test: (status, failing rows)}."""
    warehouse = folder / "warehouse.duckdb"
    warehouse.unlink(missing_ok=True)
    with duckdb.connect(str(warehouse)) as con:
        for schema in ("intermediate", "gold", "marts"):
            con.execute(f"create schema if not exists {schema}")
        for statement in statements:
            con.execute(statement)
    project = DbtProject(folder / "target", base_environment(warehouse))
    with contextlib.suppress(AssertionError):  # failing tests are what some cases expect
        project.run("test", "--select", "test_type:singular")
    results = json.loads((folder / "target" / "run_results.json").read_text())["results"]
    return {r["unique_id"].split(".")[-1]: (r["status"], r["failures"]) for r in results}


def test_the_singular_tests_pass_on_rows_that_keep_the_contract(folder: Path) -> None:
    assert _test(folder, list(GOOD.values())) == dict.fromkeys(SINGULAR, ("pass", 0))


@pytest.mark.parametrize(
    ("table", "broken", "failing"),
    [
        # user 10 bought item 100: recommending it breaks the contract
        ("recommendations", GOOD["recommendations"].replace("(10, 102, 1)", "(10, 100, 1)"), {SINGULAR[1]: 1}),
        # a cent off on one day, and a day of valid order lines missing from gold
        (
            "gold",
            GOOD["gold"].replace("24.98", "24.97").replace(", (date '2026-11-02', 9.99, 1, 1)", ""),
            {SINGULAR[0]: 2},
        ),
    ],
    ids=["bought-item-recommended", "gold-off-by-a-cent-and-a-day-missing"],
)
def test_each_singular_test_fails_on_the_rows_that_break_it(
    folder: Path, table: str, broken: str, failing: dict[str, int]
) -> None:
    results = _test(folder, list((GOOD | {table: broken}).values()))
    assert {name: failures for name, (status, failures) in results.items() if status == "fail"} == failing
    assert all(status == "pass" for name, (status, _) in results.items() if name not in failing)
