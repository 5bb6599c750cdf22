"""BigQuery: the project compiles for it with no network and no credentials, and it builds on the
BigQuery emulator (the `bigquery_emulator` fixture of tests/emulators.py): staging to marts, the
same rows as DuckDB's.

What the emulator (bqemulator 1.4.0) cannot run, said plainly (docs/models.md, "BigQuery"):
- `create table ... (columns) as select`, the DDL of models with an enforced contract: the
  emulator build passes `--vars '{enforce_contracts: false}'`, so those models are built with a
  plain `create table ... as select`; the compile test below keeps the contracts on;
- materialized views: the serving models (models/serving/) and their tests are left out;
- NUMERIC keeps 3 decimal places there (9 on BigQuery): decimals are compared at the model's
  declared scale, at most 3 places, and so are floats derived from them; the unit tests whose
  expected rows need 4 or 6 places are left out.
"""

from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from tests import bronze_sample
from tests import test_models_contract as contract
from tests.dbt_support import (
    DbtProject,
    base_environment,
    canonical_rows,
    duckdb_relation_rows,
    load_raw_tables,
    load_raw_tables_to_bigquery,
    synced_models,
)
from tests.emulators import BigQueryEmulator

# Nothing listens on the discard port: had dbt made a request, it would fail at once.
OFFLINE = {
    "ROUNDTRIP_BQ_METHOD": "oauth-secrets",
    "ROUNDTRIP_BQ_TOKEN": "offline",
    "ROUNDTRIP_BQ_API_ENDPOINT": "http://127.0.0.1:9",
}
EMULATOR_VARS = "{enforce_contracts: false}"
EMULATOR_CANNOT_BUILD = [
    "path:models/serving",  # materialized views
    "item_performance_clicks_without_orders_and_rates",  # NUMERIC(9, 4) ratios
    "recommendations_skip_bought_items_and_keep_ten",  # scores with 6 places
    # dbt-bigquery writes unit-test rows as triple-quoted literals, '''Zoë O\'Brien''': the emulator
    # keeps the backslash of the escape (the mart itself, built from the raw tables, is compared below)
    "email_triggers_types_consent_and_payload",
]
EMULATOR_NUMERIC_PLACES = 3


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

    # the contracts stay on here: every synced model enforced, a BigQuery type on every column
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    contracted = {n["name"]: n for n in manifest["nodes"].values() if n.get("contract", {}).get("enforced")}
    assert synced_models(manifest) and synced_models(manifest) <= set(contracted)
    types = {column["data_type"] for node in contracted.values() for column in node["columns"].values()}
    assert "string" in types and "text" not in types and None not in types


@pytest.fixture(scope="module")
def duckdb_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DbtProject]:
    """The same bronze and seed rows built on DuckDB, to compare with."""
    folder = tmp_path_factory.mktemp("bigquery-duckdb")
    warehouse = folder / "warehouse.duckdb"
    load_raw_tables(warehouse, bronze_sample.all_raw_rows())
    project = DbtProject(folder / "target", base_environment(warehouse))
    project.run("build", "--exclude", "path:models/serving")
    return warehouse, project


def _declared_places(node: dict[str, Any]) -> dict[str, int]:
    """Decimal places each column may keep on the emulator: its declared scale, at most 3."""
    places = {}
    for name, column in node["columns"].items():
        declared = re.fullmatch(r"(?:decimal|numeric)\(\d+, *(\d+)\)", column.get("data_type") or "")
        if declared:
            places[name] = min(int(declared[1]), EMULATOR_NUMERIC_PLACES)
    return places


def _at_places(value: Any, places: int | None) -> Any:
    if isinstance(value, float):  # a float computed from a NUMERIC (recommendations.score)
        return round(value, EMULATOR_NUMERIC_PLACES)
    if isinstance(value, Decimal) and places is not None:
        return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return value


def _rows_at_places(columns: list[str], rows: list[tuple[Any, ...]], places: dict[str, int]) -> list[tuple[Any, ...]]:
    return canonical_rows([tuple(_at_places(v, places.get(c)) for c, v in zip(columns, row)) for row in rows])


@pytest.mark.bigquery
def test_builds_on_the_bigquery_emulator(
    tmp_path: Path, bigquery_emulator: BigQueryEmulator, duckdb_build: tuple[Path, DbtProject]
) -> None:
    client = bigquery_emulator.client()
    load_raw_tables_to_bigquery(client, bigquery_emulator.project, bronze_sample.all_raw_rows())
    env = {**bigquery_emulator.dbt_env("analytics"), "ROUNDTRIP_DBT_THREADS": "4"}
    project = DbtProject(tmp_path / "target", base_environment(tmp_path / "unused.duckdb", env))

    # unit tests build their fixtures in the model's dataset, before any model has created it
    client.query(f"create schema if not exists `{bigquery_emulator.project}.marts`").result()
    project.run("build", "--exclude", *EMULATOR_CANNOT_BUILD, "--vars", EMULATOR_VARS, target="bigquery")

    results = json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]
    status = {r["unique_id"].split(".")[-1]: r["status"] for r in results if r["unique_id"].startswith("model.")}
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    synced = synced_models(manifest)
    assert {name: status.get(name) for name in synced} == dict.fromkeys(synced, "success")
    unit_tests = [r for r in results if r["unique_id"].startswith("unit_test.")]
    assert len(unit_tests) >= 15 and {r["status"] for r in unit_tests} == {"pass"}
    assert not any(n.get("contract", {}).get("enforced") for n in manifest["nodes"].values()), "contracts off here"

    def rows(relation: str, columns: str) -> list[tuple[object, ...]]:
        query = f"select {columns} from `{bigquery_emulator.project}.{relation}`"
        return canonical_rows([tuple(row.values()) for row in client.query(query).result()])

    # silver and gold: the contract test's rows, written out by hand
    assert rows("silver.orders_clean", contract.ORDERS_CLEAN_COLUMNS) == canonical_rows(contract.EXPECTED_ORDERS_CLEAN)
    assert rows("silver.clicks_clean", contract.CLICKS_CLEAN_COLUMNS) == canonical_rows(contract.EXPECTED_CLICKS_CLEAN)
    assert rows("gold.daily_gmv_metrics", "*") == canonical_rows(contract.EXPECTED_DAILY_GMV_METRICS)
    assert rows("gold.user_funnel_metrics", "*") == canonical_rows(contract.EXPECTED_USER_FUNNEL_METRICS)
    assert rows("gold.hourly_order_patterns", "*") == canonical_rows(contract.EXPECTED_HOURLY_ORDER_PATTERNS)
    without_ratios = (
        "event_date, item_id, item_title, category, views, clicks, add_to_carts, orders, units_sold, revenue"
    )
    assert rows("gold.item_performance", without_ratios) == canonical_rows(
        [row[:10] for row in contract.EXPECTED_ITEM_PERFORMANCE]
    )

    # every mart (and the segment history), row for row against DuckDB's build of the same rows
    warehouse, duckdb_project = duckdb_build
    duck_nodes = {
        n["name"]: n
        for n in json.loads((duckdb_project.target_path / "manifest.json").read_text())["nodes"].values()
        if n["resource_type"] in ("model", "snapshot")
    }
    compared = [r for r in duckdb_project.relations(("model", "snapshot")) if r.schema in ("marts", "snapshots")]
    synced_marts = {n["name"] for n in duck_nodes.values() if n["name"] in synced and n["fqn"][1] == "marts"}
    snapshots = {n["name"] for n in duck_nodes.values() if n["resource_type"] == "snapshot"}
    assert synced_marts and {r.name for r in compared} >= synced_marts | snapshots
    for relation in compared:
        columns, duck_rows = duckdb_relation_rows(warehouse, relation)
        assert duck_rows, f"{relation.name} is empty: the comparison would prove nothing"
        places = _declared_places(duck_nodes[relation.name])
        emulator_rows = rows(f"{relation.schema}.{relation.identifier}", ", ".join(columns))
        assert _rows_at_places(columns, emulator_rows, places) == _rows_at_places(columns, duck_rows, places), (
            relation.name
        )


# text the marts' payloads and links meet: accents, quotes, a backslash, 2-, 3- and 4-byte UTF-8
TEXT_SAMPLES = ["café & thé/100%", 'crème "lamp"', "back\\slash", "yoga mat 🧘", "Zoë O'Brien", "€5", "a-b_c.d~e", ""]


@pytest.mark.bigquery
def test_url_encoding_and_json_strings_run_on_the_emulator(tmp_path: Path, bigquery_emulator: BigQueryEmulator) -> None:
    """The BigQuery side of `url_encode` and `json_string` (the email payloads), compiled by dbt
    and run on the emulator: RFC 3986 percent-encoding of the UTF-8 bytes, and JSON strings."""
    from urllib.parse import quote

    project = DbtProject(tmp_path / "target", base_environment(tmp_path / "unused.duckdb", OFFLINE))
    samples = " union all ".join(
        f"select {i} as position, {json.dumps(s, ensure_ascii=False)} as q" for i, s in enumerate(TEXT_SAMPLES)
    )
    inline = f"with samples as ({samples}) select position, {{{{ url_encode('q') }}}} as encoded, {{{{ json_string('q') }}}} as json_text from samples"
    output = project.run(
        "--quiet", "compile", "--no-populate-cache", "--inline", inline, "--output", "json", target="bigquery"
    )
    compiled = json.loads(output)["compiled"]
    assert "to_code_points(" in compiled and "to_json_string(" in compiled

    found = {
        row["position"]: (row["encoded"], row["json_text"])
        for row in bigquery_emulator.client().query(compiled).result()
    }
    assert found == {i: (quote(s, safe="-._~"), json.dumps(s, ensure_ascii=False)) for i, s in enumerate(TEXT_SAMPLES)}
