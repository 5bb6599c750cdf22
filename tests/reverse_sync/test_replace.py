"""replace: a table swapped in atomically, then its materialized views refreshed by dbt."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from reverse_etl.engine import Connections, RunOptions, SyncResult, run_sync, run_syncs
from reverse_etl.runs import recent_runs
from reverse_etl.spec import SyncSpec, load_specs
from roundtrip.core.paths import PROJECT_ROOT

from .conftest import FIXTURE_PROJECT, Harness

pytestmark = [pytest.mark.postgres, pytest.mark.slow]  # runs dbt on Postgres

ITEMS = "t(item_id, title, price)"
V1 = f"select * from (values (1, 'lamp', 10.00::decimal(10, 2)), (2, 'desk', 99.00), (3, 'chair', 45.50)) {ITEMS}"
V2 = f"select * from (values (1, 'lamp', 12.00::decimal(10, 2)), (3, 'chair', 45.50), (4, 'rug', 30.00)) {ITEMS}"


def counts(result: SyncResult) -> dict[str, int]:
    assert result.error is None, result.error
    return result.counts.as_dict()


def test_replace_swaps_refreshes_views_and_skips_when_nothing_changed(harness: Harness) -> None:
    harness.model("items_export", V1)
    first = harness.run("serving_items")
    assert counts(first) == {
        "read": 3,
        "inserted": 3,
        "updated": 0,
        "unchanged": 0,
        "healed": 0,
        "deleted": 0,
        "rejected": 0,
        "skipped": 0,
    }
    assert first.refreshed == ["items_mv"]  # all_item_ids_mv also reads retired items: not loaded yet
    mv = "select item_id, title, price::text from serving.items_mv order by 1"
    assert harness.sql(mv) == [(1, "lamp", "10.00"), (2, "desk", "99.00"), (3, "chair", "45.50")]
    oid = harness.sql("select 'marts.items_export'::regclass::oid")

    versions = harness.sql("select item_id, xmin::text from marts.items_export order by 1")
    second = harness.run("serving_items")
    assert counts(second) == {
        "read": 3,
        "inserted": 0,
        "updated": 0,
        "unchanged": 3,
        "healed": 0,
        "deleted": 0,
        "rejected": 0,
        "skipped": 0,
    }
    assert second.refreshed == []
    assert harness.sql("select item_id, xmin::text from marts.items_export order by 1") == versions  # untouched

    harness.model("items_export", V2)
    third = harness.run("serving_items")
    assert counts(third) == {
        "read": 3,
        "inserted": 1,
        "updated": 1,
        "unchanged": 1,
        "healed": 0,
        "deleted": 1,
        "rejected": 0,
        "skipped": 0,
    }
    assert harness.sql(mv) == [(1, "lamp", "12.00"), (3, "chair", "45.50"), (4, "rug", "30.00")]
    assert harness.sql("select 'marts.items_export'::regclass::oid") == oid  # same table: views stay valid

    # a refresh that fails leaves a debt that the next run pays even if nothing changed
    harness.sql("alter materialized view serving.items_mv rename to items_mv_gone")
    harness.sql("create view serving.items_mv as select 1 as item_id")  # dbt cannot refresh a view
    harness.model("items_export", V1)
    failed = harness.run("serving_items")
    assert failed.status == "failed" and "refreshing items_mv failed" in (failed.error or "")
    assert harness.sql("select count(*) from marts.items_export where item_id = 2") == [(1,)]  # the swap is in
    assert harness.sql("select models from reverse_etl.pending_refreshes") == [(["all_item_ids_mv", "items_mv"],)]
    harness.sql("drop view serving.items_mv")
    harness.sql("alter materialized view serving.items_mv_gone rename to items_mv")
    paid = harness.run("serving_items")
    assert counts(paid)["unchanged"] == 3 and paid.refreshed == ["items_mv"]
    assert harness.sql(mv) == [(1, "lamp", "10.00"), (2, "desk", "99.00"), (3, "chair", "45.50")]
    assert harness.sql("select count(*) from reverse_etl.pending_refreshes") == [(0,)]


def test_a_replace_killed_midway_leaves_the_old_table_serving(harness: Harness, fixture_manifest: Path) -> None:
    harness.model("items_export", V1)
    assert harness.run("serving_items").status == "succeeded"
    harness.model("items_export", V2)
    env = {
        **os.environ,
        "ROUNDTRIP_DUCKDB_PATH": str(harness.warehouse),
        "DBT_TARGET_PATH": str(fixture_manifest.parent),
        "ROUNDTRIP_POSTGRES_URL": harness.postgres.url(),
    }
    app = "reverse_etl:serving_items"
    with psycopg.connect(harness.postgres.url()) as reader:
        # hold a share lock on the table: the run stages every row, then waits for its swap
        reader.execute("select 1 from marts.items_export limit 1")
        run = subprocess.Popen(
            [sys.executable, "-m", "reverse_etl", "run", "--sync", "serving_items"], env=env, cwd=PROJECT_ROOT
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                waiting = harness.sql(  # (pg_stat_activity is frozen inside a transaction: not on `reader`)
                    """select count(*) from pg_locks l join pg_stat_activity a using (pid)
                       where a.application_name = %s and not l.granted and l.mode = 'AccessExclusiveLock'""",
                    (app,),
                )
                if waiting != [(0,)]:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the run never reached its swap")
            with psycopg.connect(harness.postgres.url(), autocommit=True) as client:
                client.execute("set statement_timeout = '2s'")  # readers of the views are not blocked
                assert client.execute("select count(*) from serving.items_mv").fetchone() == (3,)
            run.kill()
            run.wait(30)
        finally:
            if run.poll() is None:
                run.kill()
        reader.rollback()

    deadline = time.monotonic() + 30
    while harness.sql("select count(*) from pg_stat_activity where application_name = %s", (app,)) != [(0,)]:
        assert time.monotonic() < deadline, "the killed run's sessions never ended"
        time.sleep(0.05)
    old = [(1, "lamp", "10.00"), (2, "desk", "99.00"), (3, "chair", "45.50")]
    assert harness.sql("select item_id, title, price::text from marts.items_export order by 1") == old
    assert harness.sql("select item_id, title, price::text from serving.items_mv order by 1") == old
    killed = recent_runs(harness.postgres.url(), "serving_items", 1)[0]
    assert killed.status == "abandoned"  # still 'running' in the table, but nobody holds its lock

    resumed = harness.run("serving_items")
    assert counts(resumed) == {
        "read": 3,
        "inserted": 1,
        "updated": 1,
        "unchanged": 1,
        "healed": 0,
        "deleted": 1,
        "rejected": 0,
        "skipped": 0,
    }
    assert harness.sql("select item_id from serving.items_mv order by 1") == [(1,), (3,), (4,)]
    assert harness.sql("select status from reverse_etl.runs where run_id = %s", (killed.run_id,)) == [("abandoned",)]


def test_replace_syncs_run_together_share_one_refresh(harness: Harness) -> None:
    """run_syncs (the CLI's `run --sync all`, the demo) refreshes the serving models of every
    replace sync in one dbt run after the last sync; a failed refresh fails each waiting sync
    and leaves every debt for the next run."""
    harness.model("items_export", V1)
    harness.model(
        "retired_items_export", "select * from (values (7, 'stool', 5.00::decimal(10, 2))) t(item_id, title, price)"
    )
    specs = [harness.specs["serving_items"], harness.specs["serving_retired_items"]]
    endpoints = Connections.of(postgres_url=harness.postgres.url(), redis_url=harness.redis.url())
    options = RunOptions(dbt_project_dir=FIXTURE_PROJECT)

    items, retired = run_syncs(specs, endpoints, options)
    assert counts(items)["inserted"] == 3 and counts(retired)["inserted"] == 1
    # each sync reports what it was owed; all_item_ids_mv (reading both tables) is built once, whole
    assert items.refreshed == ["all_item_ids_mv", "items_mv"] and retired.refreshed == ["all_item_ids_mv"]
    assert harness.sql("select item_id from serving.all_item_ids_mv order by 1") == [(1,), (2,), (3,), (7,)]
    assert harness.sql("select count(*) from reverse_etl.pending_refreshes") == [(0,)]

    harness.sql("alter materialized view serving.all_item_ids_mv rename to all_item_ids_gone")
    harness.sql("create view serving.all_item_ids_mv as select 1 as item_id")  # dbt cannot refresh a view
    harness.model("items_export", V2)
    harness.model(
        "retired_items_export", "select * from (values (2, 'desk', 99.00::decimal(10, 2))) t(item_id, title, price)"
    )
    items, retired = run_syncs(specs, endpoints, options)
    for failed in (items, retired):
        assert failed.status == "failed" and "refreshing all_item_ids_mv, items_mv failed" in (failed.error or "")
    assert harness.sql("select item_id from marts.retired_items_export") == [(2,)]  # both swaps are in
    assert harness.sql("select sync from reverse_etl.pending_refreshes order by 1") == [
        ("serving_items",),
        ("serving_retired_items",),
    ]
    history = [
        r.status for s in ("serving_items", "serving_retired_items") for r in recent_runs(harness.postgres.url(), s, 1)
    ]
    assert history == ["failed", "failed"]


def _comment(harness: Harness, relation: str) -> str:
    return harness.sql("select obj_description(%s::regclass, 'pg_class')", (relation,))[0][0] or ""


def test_a_view_built_from_the_manifests_definition_is_refreshed_in_place(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once dbt has built the view, a later replace refreshes it with no dbt process at all: its
    comment holds the definition hash that the manifest gives reverse_etl too."""
    harness.model("items_export", V1)
    assert harness.run("serving_items").refreshed == ["items_mv"]  # the first build: dbt
    (items_mv,) = [m for m in harness.specs["serving_items"].refresh if m.name == "items_mv"]
    assert items_mv.relation == "serving.items_mv" and items_mv.definition
    assert _comment(harness, "serving.items_mv").endswith(f" definition {items_mv.definition}")  # Jinja == Python
    oid = harness.sql("select 'serving.items_mv'::regclass::oid")

    import reverse_etl.refresh

    def no_dbt(models: list[str], *args: object) -> None:
        raise AssertionError(f"dbt was started for {models}")

    monkeypatch.setattr(reverse_etl.refresh, "run_dbt_refresh", no_dbt)
    harness.model("items_export", V2)
    second = harness.run("serving_items")
    assert second.error is None and second.refreshed == ["items_mv"]
    mv = "select item_id, title, price::text from serving.items_mv order by 1"
    assert harness.sql(mv) == [(1, "lamp", "12.00"), (3, "chair", "45.50"), (4, "rug", "30.00")]
    assert harness.sql("select 'serving.items_mv'::regclass::oid") == oid  # refreshed, not rebuilt
    assert harness.sql("select count(*) from reverse_etl.pending_refreshes") == [(0,)]


def test_a_changed_model_definition_is_rebuilt_by_dbt(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same sync after the serving model's file changed (a new column): the view's comment
    no longer holds the manifest's definition, so dbt, not an in-place refresh, serves it."""
    project = tmp_path / "project"
    shutil.copytree(FIXTURE_PROJECT, project)
    # the fixture reads the project's shared macros by a relative path: give the copy its own
    shutil.copytree(PROJECT_ROOT / "macros" / "serving", project / "shared_macros")
    config = project / "dbt_project.yml"
    config.write_text(config.read_text().replace("../../../macros/serving", "shared_macros"))

    def specs() -> dict[str, SyncSpec]:
        out = tmp_path / "target"
        env = {**os.environ, "ROUNDTRIP_DUCKDB_PATH": str(harness.warehouse), "ROUNDTRIP_TARGET": "duckdb"}
        subprocess.run(
            [str(Path(sys.executable).parent / "dbt"), "--quiet", "parse", "--project-dir", str(project),
             "--profiles-dir", str(PROJECT_ROOT / "profiles"), "--target-path", str(out), "--log-path", str(out)],
            check=True, env=env, cwd=project,
        )  # fmt: skip
        return {s.name: s for s in load_specs(out / "manifest.json")}

    def run(spec: SyncSpec) -> SyncResult:
        endpoints = Connections.of(postgres_url=harness.postgres.url(), redis_url=harness.redis.url())
        result = run_sync(spec, endpoints, RunOptions(dbt_project_dir=project))
        assert result.error is None, result.error
        return result

    harness.model("items_export", V1)
    before = specs()["serving_items"]
    assert run(before).refreshed == ["items_mv"]

    model = project / "models" / "serving" / "items_mv.sql"
    model.write_text(
        model.read_text().replace(
            "select item_id, title, price", "select item_id, title, price, price * 2 as double_price"
        )
    )
    after = specs()["serving_items"]
    (old,), (new,) = ([m for m in s.refresh if m.name == "items_mv"] for s in (before, after))
    assert new.definition != old.definition

    dbt_runs: list[list[str]] = []
    import reverse_etl.refresh

    real = reverse_etl.refresh.run_dbt_refresh
    monkeypatch.setattr(
        reverse_etl.refresh, "run_dbt_refresh", lambda models, *a: (dbt_runs.append(models), real(models, *a))
    )
    harness.model("items_export", V2)
    assert run(after).refreshed == ["items_mv"]
    assert dbt_runs == [["items_mv"]]
    mv = "select item_id, title, double_price::text from serving.items_mv order by 1"
    assert harness.sql(mv) == [(1, "lamp", "24.00"), (3, "chair", "91.00"), (4, "rug", "60.00")]
    assert _comment(harness, "serving.items_mv").endswith(f" definition {new.definition}")


def test_a_serving_view_dropped_by_hand_is_built_again_while_the_mart_is_unchanged(harness: Harness) -> None:
    """`drop materialized view` by hand (found by an adversarial sweep): the next run, the mart
    and the table unchanged, builds the view again (dbt: its definition is the manifest's)."""
    harness.model("items_export", V1)
    assert harness.run("serving_items").refreshed == ["items_mv"]
    harness.sql("drop materialized view serving.items_mv")

    again = harness.run("serving_items")

    assert again.ok and again.counts.unchanged == 3 and again.refreshed == ["items_mv"]
    assert harness.sql("select item_id from serving.items_mv order by 1") == [(1,), (2,), (3,)]
    assert harness.run("serving_items").refreshed == []  # there again: nothing owed
