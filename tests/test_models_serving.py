"""The serving layer on a real Postgres: materialized views with unique indexes, refreshed
CONCURRENTLY by later dbt runs, without making readers wait (macros/materializations/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from roundtrip.dev.services import PostgresEndpoint
from tests import bronze_sample
from tests.dbt_support import DbtProject, base_environment, copy_raw_tables_to_postgres, load_raw_tables

pytestmark = pytest.mark.postgres

SERVING_KEYS = {
    "enriched_user_mv": ["user_id"],
    "item_ids_mv": ["item_id"],
    "iris_zones_mv": ["iris_code"],
    "non_recommendable_items_mv": ["item_id"],
    "recommendable_items_mv": ["item_id"],
}
SERVING = ("--select", "+path:models/serving")


@pytest.fixture
def serving_database(tmp_path: Path, pg_database: PostgresEndpoint) -> Iterator[tuple[DbtProject, str]]:
    """The export marts and the serving views built once on a fresh Postgres database."""
    warehouse = tmp_path / "warehouse.duckdb"
    load_raw_tables(warehouse, bronze_sample.all_raw_rows())
    copy_raw_tables_to_postgres(warehouse, pg_database.url())
    # a lock the views would have to wait for fails the statement instead of hanging the test
    env = base_environment(warehouse, {**pg_database.dbt_env(), "PGOPTIONS": "-c lock_timeout=10s"})
    project = DbtProject(tmp_path / "target", env)
    project.run("build", *SERVING, "--exclude", "resource_type:test", "resource_type:unit_test", target="postgres")
    yield project, pg_database.url()


def _matviews(url: str) -> dict[str, tuple[int, bool]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select matviewname, (schemaname || '.' || matviewname)::regclass::oid, ispopulated "
            "from pg_matviews where schemaname = 'serving'"
        ).fetchall()
    return {name: (int(oid), populated) for name, oid, populated in rows}


def _unique_indexes(url: str) -> dict[str, list[list[str]]]:
    """Unique indexes of the serving schema: relation -> list of key column lists."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """select c.relname, array_agg(a.attname order by k.ordinality)
               from pg_index i
               join pg_class c on c.oid = i.indrelid
               join pg_namespace n on n.oid = c.relnamespace
               cross join unnest(i.indkey) with ordinality as k(attnum, ordinality)
               join pg_attribute a on a.attrelid = c.oid and a.attnum = k.attnum
               where n.nspname = 'serving' and i.indisunique and i.indpred is null
               group by c.relname, i.indexrelid"""
        ).fetchall()
    found: dict[str, list[list[str]]] = {}
    for relation, columns in rows:
        found.setdefault(relation, []).append(list(columns))
    return found


def test_views_are_materialized_with_a_unique_index_on_their_key(serving_database: tuple[DbtProject, str]) -> None:
    _, url = serving_database
    views = _matviews(url)
    assert set(views) == set(SERVING_KEYS)
    assert all(populated for _, populated in views.values())
    assert _unique_indexes(url) == {name: [key] for name, key in SERVING_KEYS.items()}
    with psycopg.connect(url) as conn:
        for view, source in (("enriched_user_mv", "enriched_user"), ("iris_zones_mv", "iris_zones")):
            served = conn.execute(f"select * from serving.{view} order by 1").fetchall()
            assert served == conn.execute(f"select * from marts.{source} order by 1").fetchall()
        assert conn.execute("select iris_code from serving.iris_zones_mv where iris_code like '2A%' limit 1").fetchone()


def test_later_runs_refresh_concurrently_while_readers_read(serving_database: tuple[DbtProject, str]) -> None:
    """reverse_etl rewrites an export table in place, then runs the serving models again: the same
    views (same oids) now serve the new rows, and a reader holding a snapshot never blocked it."""
    project, url = serving_database
    before = _matviews(url)
    with psycopg.connect(url) as writer:
        writer.execute("delete from marts.enriched_user where user_id = 14")
        writer.execute("update marts.enriched_user set segment = 'at_risk' where user_id = 10")

    with psycopg.connect(url) as reader:
        reader.execute("begin isolation level repeatable read")
        assert reader.execute("select count(*) from serving.enriched_user_mv").fetchone() == (5,)
        # a plain refresh would wait for this reader (it needs an exclusive lock) ...
        with psycopg.connect(url) as other, pytest.raises(psycopg.errors.LockNotAvailable):
            other.execute("set lock_timeout = '1s'")
            other.execute("refresh materialized view serving.enriched_user_mv")
        # ... the models' refresh does not (PGOPTIONS lock_timeout would fail it)
        project.forget_executed_sql()
        project.run("run", "--select", "path:models/serving", target="postgres")
        assert reader.execute("select count(*) from serving.enriched_user_mv").fetchone() == (5,), "its snapshot"
        reader.execute("commit")

    assert "refresh materialized view concurrently" in project.executed_sql()
    assert _matviews(url) == before, "the same views, refreshed in place"
    assert _unique_indexes(url) == {name: [key] for name, key in SERVING_KEYS.items()}
    with psycopg.connect(url) as conn:
        served = conn.execute("select user_id, segment from serving.enriched_user_mv order by user_id").fetchall()
        source = conn.execute("select user_id, segment from marts.enriched_user order by user_id").fetchall()
    assert served == source
    assert (10, "at_risk") in served and 14 not in {user_id for user_id, _ in served}


def test_each_view_keeps_the_definition_that_a_duckdb_manifest_gives_reverse_etl(
    serving_database: tuple[DbtProject, str], tmp_path: Path
) -> None:
    """The hash the materialization keeps in each view's comment (Jinja, built on Postgres) is
    the one reverse_etl computes from the DuckDB manifest it reads: what lets it refresh the
    views without starting dbt (reverse_etl/refresh.py)."""
    import json

    from reverse_etl.spec import serving_definition

    project, url = serving_database
    duckdb_project = DbtProject(tmp_path / "duckdb_target", project.env)
    duckdb_project.run("parse", target="duckdb")
    manifest = json.loads((tmp_path / "duckdb_target" / "manifest.json").read_text())
    expected = {
        node["name"]: serving_definition(manifest, uid)
        for uid, node in manifest["nodes"].items()
        if node["name"] in SERVING_KEYS
    }
    assert set(expected) == set(SERVING_KEYS) and all(expected.values())
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select matviewname, obj_description((schemaname || '.' || matviewname)::regclass, 'pg_class') "
            "from pg_matviews where schemaname = 'serving'"
        ).fetchall()
    assert {name: comment.rsplit(" definition ", 1)[-1] for name, comment in rows} == expected


def test_full_refresh_rebuilds_the_view_and_its_index(serving_database: tuple[DbtProject, str]) -> None:
    project, url = serving_database
    before = _matviews(url)
    project.run("run", "--select", "iris_zones_mv", "--full-refresh", target="postgres")
    after = _matviews(url)
    assert after["iris_zones_mv"][0] != before["iris_zones_mv"][0], "a new view was swapped in"
    assert after["enriched_user_mv"] == before["enriched_user_mv"]
    assert _unique_indexes(url)["iris_zones_mv"] == [["iris_code"]]
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from serving.iris_zones_mv").fetchone() == (26,)
        leftovers = conn.execute("select relname from pg_class where relname like '%dbt_tmp%'").fetchall()
    assert leftovers == []
