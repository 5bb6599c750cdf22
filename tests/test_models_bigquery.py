"""BigQuery: the project compiles for it with no network and no credentials, and it builds on the
BigQuery emulator (the `bigquery_emulator` fixture of tests/emulators.py) wherever the emulator can run it.

What the emulator cannot run, said plainly (docs/models.md, "BigQuery"):
- `create table ... (columns) as select`, the DDL of every model with an enforced contract: those
  models and everything downstream of them are left out of the emulator build (their BigQuery SQL
  is still compiled below, and their unit tests run where their inputs exist);
- NUMERIC columns keep 3 decimal places there (9 on BigQuery): ratios with 4 places are not
  compared, and the unit test on them is left out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import bronze_sample
from tests import test_models_contract as contract
from tests.dbt_support import DbtProject, base_environment, canonical_rows, load_raw_tables_to_bigquery
from tests.emulators import BigQueryEmulator

# Nothing listens on the discard port: had dbt made a request, it would fail at once.
OFFLINE = {
    "ROUNDTRIP_BQ_METHOD": "oauth-secrets",
    "ROUNDTRIP_BQ_TOKEN": "offline",
    "ROUNDTRIP_BQ_API_ENDPOINT": "http://127.0.0.1:9",
}
CONTRACTED = "config.contract.enforced:true"
EMULATOR_CANNOT_BUILD = [
    # contracted models and what depends on them
    f"{CONTRACTED}+,resource_type:model",
    f"{CONTRACTED}+,resource_type:test",
    f"{CONTRACTED}+,resource_type:snapshot",
    "email_triggers_types_consent_and_payload",  # its input user_segments is contracted
    "recommendations_skip_bought_items_and_keep_ten",  # its input recommendable_items is contracted
    "item_performance_clicks_without_orders_and_rates",  # NUMERIC(9, 4) ratios
]
# dbt build runs a unit test with its model only: these run on their own, their inputs exist
CONTRACTED_UNIT_TESTS = [
    "daily_gmv_new_and_returning_users_and_growth",
    "daily_gmv_growth_rounds_half_away_from_zero",
    "user_segments_boundaries_and_precedence",
    "items_are_recommendable_or_excluded_with_the_first_reason",
]


def test_compiles_for_bigquery_offline(tmp_path: Path) -> None:
    project = DbtProject(tmp_path / "target", base_environment(tmp_path / "unused.duckdb", OFFLINE))
    project.run("compile", "--no-populate-cache", target="bigquery")

    def compiled(path: str) -> str:
        return (tmp_path / "target" / "compiled" / "roundtrip" / "models" / path).read_text()

    staging = compiled("staging/events/stg_events__orders.sql")
    assert "regexp_contains(" in staging and "safe_cast(" in staging and "try_cast" not in staging
    silver = compiled("silver/orders_clean.sql")
    assert "array_to_string([" in silver, "validation codes joined the BigQuery way"
    assert "files_to_rebuild" not in silver, "silver is a full table on BigQuery"
    triggers = compiled("marts/email_triggers.sql")
    assert "to_code_points(" in triggers and "to_json_string(" in triggers and "to_hex(md5(" in triggers
    assert "timestamp_sub(" in compiled("marts/user_segments.sql")
    assert "extract(dayofweek from" in compiled("gold/hourly_order_patterns.sql")

    materialized = {r.name: r for r in project.relations(("model",))}
    assert set(materialized) >= {"orders_clean", "enriched_user_mv", "item_ids_mv"}


@pytest.mark.bigquery
def test_builds_on_the_bigquery_emulator(tmp_path: Path, bigquery_emulator: BigQueryEmulator) -> None:
    client = bigquery_emulator.client()
    load_raw_tables_to_bigquery(client, bigquery_emulator.project, bronze_sample.all_raw_rows())
    env = {**bigquery_emulator.dbt_env("analytics"), "ROUNDTRIP_DBT_THREADS": "4"}
    project = DbtProject(tmp_path / "target", base_environment(tmp_path / "unused.duckdb", env))

    # unit tests build their fixtures in the model's dataset, which no model creates here
    client.query(f"create schema if not exists `{bigquery_emulator.project}.marts`").result()
    project.run("build", "--exclude", *EMULATOR_CANNOT_BUILD, target="bigquery")
    output = project.run("test", "--select", *CONTRACTED_UNIT_TESTS, target="bigquery")
    assert f"PASS={len(CONTRACTED_UNIT_TESTS)} " in output

    def rows(relation: str, columns: str) -> list[tuple[object, ...]]:
        query = f"select {columns} from `{bigquery_emulator.project}.{relation}`"
        return canonical_rows([tuple(row.values()) for row in client.query(query).result()])

    assert rows("silver.orders_clean", contract.ORDERS_CLEAN_COLUMNS) == canonical_rows(contract.EXPECTED_ORDERS_CLEAN)
    assert rows("silver.clicks_clean", contract.CLICKS_CLEAN_COLUMNS) == canonical_rows(contract.EXPECTED_CLICKS_CLEAN)
    assert rows("gold.user_funnel_metrics", "*") == canonical_rows(contract.EXPECTED_USER_FUNNEL_METRICS)
    assert rows("gold.hourly_order_patterns", "*") == canonical_rows(contract.EXPECTED_HOURLY_ORDER_PATTERNS)
    without_ratios = (
        "event_date, item_id, item_title, category, views, clicks, add_to_carts, orders, units_sold, revenue"
    )
    assert rows("gold.item_performance", without_ratios) == canonical_rows(
        [row[:10] for row in contract.EXPECTED_ITEM_PERFORMANCE]
    )
