"""The demo's warehouse, whichever it is: what each layer holds (counted in the warehouse), the
daily GMV for the report's chart, and on BigQuery the emulator and what it cannot build."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from roundtrip.core.settings import load_settings

# Layers reported in the summary, in this order
LAYERS = (
    "raw_app", "raw_catalog", "bronze", "staging", "silver", "intermediate", "gold", "marts", "serving", "snapshots",
    "reference",
)  # fmt: skip
GMV_QUERY = "select event_date, gmv from {gold}.daily_gmv_metrics order by event_date"


def dbt_build_args(target: str) -> list[str]:
    """What ``dbt build`` leaves out on the BigQuery emulator (nothing elsewhere)."""
    from roundtrip.dev.bigquery_emulator import dbt_args_on_emulator

    return dbt_args_on_emulator() if target == "bigquery" else []


def bigquery_gaps() -> list[dict[str, str]]:
    from roundtrip.dev.bigquery_emulator import DBT_GAPS

    return [{"left out": selector, "why": reason} for selector, reason in DBT_GAPS]


@contextlib.contextmanager
def bigquery_warehouse() -> Iterator[dict[str, str]]:
    """The BigQuery emulator as the warehouse: started for the demo, stopped after it. Yields the
    settings that point the loaders, dbt and the syncs at it; the datasets of every layer exist
    first (dbt's unit tests write their fixtures into a model's dataset before the model does)."""
    from roundtrip.dev.bigquery_emulator import bigquery_emulator

    settings = load_settings()
    with bigquery_emulator(settings.bq_project) as emulator:
        client = emulator.client()
        for dataset in (*LAYERS, "intermediate", "snapshots", settings.bq_dataset):
            client.query(f"create schema if not exists `{emulator.project}.{dataset}`").result()
        yield emulator.dbt_env(settings.bq_dataset)


def warehouse_layers(target: str = "duckdb", settings: Any = None) -> list[dict[str, Any]]:
    """Rows per table of each layer, read back from the warehouse."""
    settings = settings or load_settings()
    order = {name: i for i, name in enumerate(LAYERS)}
    if target == "postgres":
        rows = _postgres_layers(settings)
    elif target == "bigquery":
        rows = _bigquery_layers(settings)
    else:
        rows = _duckdb_layers(settings)
    return sorted(rows, key=lambda r: (order[r["layer"]], r["table"]))


def _postgres_layers(settings: Any) -> list[dict[str, Any]]:
    import psycopg

    rows = []
    with psycopg.connect(settings.secret("warehouse_url")) as conn:
        tables = conn.execute(
            """select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
               where c.relkind in ('r', 'v', 'm', 'p') and n.nspname = any(%s) order by 1, 2""",
            (list(LAYERS),),
        ).fetchall()
        for schema, table in tables:
            count = conn.execute(f'select count(*) from "{schema}"."{table}"').fetchone()
            rows.append({"layer": schema, "table": table, "rows": int(count[0]) if count else 0})
    return rows


def _duckdb_layers(settings: Any) -> list[dict[str, Any]]:
    from roundtrip.core.duckdb_extensions import connect

    rows = []
    con = connect(settings.duckdb_path, read_only=True)
    try:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            f"where table_schema in ({', '.join(repr(s) for s in LAYERS)}) order by table_schema, table_name"
        ).fetchall()
        for schema, table in tables:
            count = con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()
            rows.append({"layer": schema, "table": table, "rows": int(count[0]) if count else 0})
    finally:
        con.close()
    return rows


def _bigquery_client(settings: Any) -> Any:
    from roundtrip.core.bigquery import BigQueryConnection

    return BigQueryConnection.from_settings(settings).rest_client()


def _bigquery_layers(settings: Any) -> list[dict[str, Any]]:
    client = _bigquery_client(settings)
    rows = []
    for dataset in LAYERS:
        for table in client.list_tables(f"{settings.bq_project}.{dataset}"):
            relation = f"`{settings.bq_project}.{dataset}.{table.table_id}`"
            count = next(iter(client.query(f"select count(*) from {relation}").result()))[0]
            rows.append({"layer": dataset, "table": table.table_id, "rows": int(count)})
    return rows


def daily_gmv(target: str, settings: Any) -> list[tuple[Any, Any]]:
    """(event_date, gmv) of gold.daily_gmv_metrics, for the report's chart."""
    if target == "postgres":
        import psycopg

        with psycopg.connect(settings.secret("warehouse_url")) as conn:
            return [(r[0], r[1]) for r in conn.execute(GMV_QUERY.format(gold="gold")).fetchall()]
    if target == "bigquery":
        query = GMV_QUERY.format(gold=f"`{settings.bq_project}.gold`")
        return [(r[0], r[1]) for r in _bigquery_client(settings).query(query).result()]
    from roundtrip.core.duckdb_extensions import connect

    con = connect(settings.duckdb_path, read_only=True)
    try:
        return [(r[0], r[1]) for r in con.execute(GMV_QUERY.format(gold="gold")).fetchall()]
    finally:
        con.close()
