"""Sync specs from a real dbt manifest, and the records the engine classifies from the DuckDB
source, in the shape each destination declares."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest
import redis
from pydantic import ValidationError

from reverse_etl.destinations.postgres import PostgresDestination
from reverse_etl.destinations.redis import TARGET, VALUE, RedisDestination
from reverse_etl.errors import (
    SyncError,
    TransientSyncError,
    from_duckdb,
    from_postgres_extension,
    from_psycopg,
    from_redis,
    is_transient,
)
from reverse_etl.records import FINGERPRINT, REASON, ROW_KEY, ROWS, Model, Records
from reverse_etl.scratch import Scratch
from reverse_etl.sources.duckdb import DuckDBSource
from reverse_etl.spec import SyncSettings, SyncSpec, load_specs, load_syncs, serving_definition

from .conftest import Harness


def test_specs_resolve_targets_and_serving_models_from_the_manifest(fixture_manifest: Path) -> None:
    specs = {s.name: s for s in load_specs(fixture_manifest)}
    items = specs["serving_items"]
    assert items.relation == '"warehouse"."marts"."items_export"'
    assert items.target == "marts.items_export"  # replace without target: where ref() puts the model
    # children built on exported tables only; items_report also reads `segments` (not exported)
    assert [(m.name, m.reads) for m in items.refresh] == [
        ("all_item_ids_mv", ["marts.items_export", "marts.retired_items_export"]),
        ("items_mv", ["marts.items_export"]),
    ]
    assert [m.name for m in specs["serving_retired_items"].refresh] == ["all_item_ids_mv"]
    assert specs["crm_segments"].settings.track_changes is not None
    assert specs["reco"].target == "reco:{user_id}" and specs["reco"].settings.value == "list"


def test_a_serving_definition_is_pinned_down_only_by_ref_and_config(fixture_manifest: Path) -> None:
    """The hash of a serving model (compared with its view's comment to refresh it without dbt)
    covers its file, key and parents; Jinja that may compile differently from run to run (vars,
    macros, env vars) or hooks leave it None: only dbt refreshes such a model."""
    manifest = json.loads(fixture_manifest.read_text())
    uid = "model.retl_fixture.items_mv"
    plain = serving_definition(manifest, uid)
    declared = {m.name: m for spec in load_specs(fixture_manifest) for m in spec.refresh}
    assert plain and declared["items_mv"].definition == plain and declared["items_mv"].relation == "serving.items_mv"
    node = manifest["nodes"][uid]
    node["raw_code"] = "{# a comment #}" + node["raw_code"].replace("ref('items_export')", "ref( 'items_export' ) -")
    assert serving_definition(manifest, uid) == plain  # the hash is of the file's checksum, unchanged here
    node["checksum"]["checksum"] = "0" * 64
    assert serving_definition(manifest, uid) not in (None, plain)
    manifest["nodes"]["model.retl_fixture.items_export"]["alias"] = "items_export_v2"
    changed_parent = serving_definition(manifest, uid)
    assert changed_parent not in (None, plain)
    for jinja in ("{{ var('x') }}", "{{ ref('items_export') ~ env_var('X') }}", "{% set x = 1 %}", "{{ this }}"):
        manifest["nodes"][uid] = {**node, "raw_code": node["raw_code"] + jinja}
        assert serving_definition(manifest, uid) is None, jinja
    manifest["nodes"][uid] = {**node, "config": {**node["config"], "post-hook": [{"sql": "analyze"}]}}
    assert serving_definition(manifest, uid) is None
    manifest["nodes"][uid] = {**node, "config": {**node["config"], "unique_key": None}}
    assert serving_definition(manifest, uid) is None


def test_two_syncs_on_one_target_are_refused_naming_each_other(fixture_manifest: Path, tmp_path: Path) -> None:
    """A copy-pasted exposure writing the table another sync writes: both would overwrite each
    other's rows on every run (and a mirror delete what the other sends). Both are refused,
    each naming the other; the other syncs stay valid."""
    manifest = json.loads(fixture_manifest.read_text())
    exposures = manifest["exposures"]
    original = exposures["exposure.retl_fixture.crm_segments"]
    copy = json.loads(json.dumps(original))
    copy["name"], copy["unique_id"] = "crm_segments_copy", "exposure.retl_fixture.crm_segments_copy"
    exposures[copy["unique_id"]] = copy
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    specs, invalid = load_syncs(path)
    refused = {i.name: i.reason for i in invalid}
    assert set(refused) == {"crm_segments", "crm_segments_copy"}
    assert "as sync crm_segments_copy does" in refused["crm_segments"]
    assert "as sync crm_segments does" in refused["crm_segments_copy"]
    assert "reco" in {s.name for s in specs}


def test_invalid_meta_names_the_exposure(fixture_manifest: Path, tmp_path: Path) -> None:
    manifest = json.loads(fixture_manifest.read_text())
    exposure = manifest["exposures"]["exposure.retl_fixture.reco"]
    exposure["meta"]["sync"]["primary_key"] = ["item_id"]  # the key template field is not in it
    exposure.get("config", {}).get("meta", {}).get("sync", {})["primary_key"] = ["item_id"]
    broken = tmp_path / "manifest.json"
    broken.write_text(json.dumps(manifest))
    with pytest.raises(SyncError, match=r"exposure 'reco': invalid meta.sync[\s\S]*inside the primary key"):
        load_specs(broken)
    # one invalid exposure fails alone: the others are still there to run
    specs, invalid = load_syncs(broken)
    assert [i.name for i in invalid] == ["reco"] and "inside the primary key" in invalid[0].reason
    assert "crm_segments" in {s.name for s in specs} and "reco" not in {s.name for s in specs}


def test_a_manifest_built_for_another_warehouse_is_refused(fixture_manifest: Path, tmp_path: Path) -> None:
    manifest = json.loads(fixture_manifest.read_text())
    manifest["metadata"]["adapter_type"] = "postgres"
    other = tmp_path / "manifest.json"
    other.write_text(json.dumps(manifest))
    with pytest.raises(SyncError, match="built for target postgres, but the syncs read from duckdb") as caught:
        load_syncs(other, target="duckdb")
    assert caught.value.hint is not None and "roundtrip dbt manifest --target duckdb" in caught.value.hint
    specs, _ = load_syncs(other, target="postgres")
    assert {s.warehouse for s in specs} == {"postgres"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"destination": "redis", "target": "reco:{user_id}", "mode": "replace"}, "replace is for postgres"),
        ({"destination": "redis", "target": "reco:{user_id:05d}"}, "plain {column} fields"),
        ({"destination": "redis", "target": "reco"}, "key template"),
        ({"destination": "postgres", "target": "crm"}, "schema.table"),
        ({"destination": "postgres", "target": "a.b", "ttl_seconds": 5}, "redis syncs only"),
        ({"destination": "postgres", "target": "a.b", "mode": "insert_only",
          "track_changes": {"column": "s", "previous": "p", "changed_at": "c"}}, "upsert or mirror"),
        ({"destination": "postgres", "target": "a.b", "refresh": ["x"]}, "replace only"),
        ({"destination": "postgres", "target": "a.b", "columns": {"__rt_x": "y"}}, "reserved"),
    ],
)  # fmt: skip
def test_settings_refuse_what_cannot_work(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SyncSettings.model_validate({"primary_key": ["user_id"], **settings})


def test_driver_errors_are_sorted_into_transient_and_terminal() -> None:
    assert is_transient(psycopg.errors.DeadlockDetected())
    assert is_transient(psycopg.errors.SerializationFailure())
    assert is_transient(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert is_transient(redis.exceptions.ConnectionError("Connection refused"))
    assert is_transient(redis.exceptions.BusyLoadingError("loading"))
    assert not is_transient(psycopg.errors.UniqueViolation())
    assert not is_transient(psycopg.errors.UndefinedColumn())
    assert not is_transient(redis.exceptions.ResponseError("WRONGTYPE"))
    assert not is_transient(duckdb.CatalogException("table does not exist"))
    # each driver's edge: its own classifier, naming what failed
    deadlock = from_psycopg(psycopg.errors.DeadlockDetected("deadlock detected"), "sync crm")
    assert isinstance(deadlock, TransientSyncError) and "sync crm" in str(deadlock)
    refused = from_postgres_extension(
        duckdb.IOException('Failed to execute query "x": ERROR:  could not connect to server: Connection refused'),
        "sync crm",
    )
    assert isinstance(refused, TransientSyncError)
    password = from_postgres_extension(
        duckdb.IOException("ERROR:  password authentication failed for user syncer password=s3cret"), "sync crm"
    )
    assert not isinstance(password, TransientSyncError) and "s3cret" not in str(password)
    locked = from_duckdb(duckdb.IOException('Could not set lock on file "w.duckdb": Conflicting lock is held'), "x")
    assert isinstance(locked, TransientSyncError)  # the warehouse held by a `dbt build`: tried again
    assert isinstance(from_redis(redis.exceptions.TimeoutError("timed out"), "sync reco"), TransientSyncError)
    assert not isinstance(
        from_redis(redis.exceptions.AuthenticationError("WRONGPASS"), "sync reco"), TransientSyncError
    )


@pytest.fixture
def offline_harness(data_dir: Path, fixture_manifest: Path) -> Harness:
    """The warehouse and specs only: source tests need no server."""
    return Harness(data_dir / "warehouse.duckdb", None, None, {s.name: s for s in load_specs(fixture_manifest)})  # type: ignore[arg-type]


def classified(harness: Harness, spec: SyncSpec) -> Iterator[Records]:
    """The spec's records from the DuckDB source, shaped for its destination (a destination
    without a connection only shapes), classified against an empty state: every record new."""
    with Scratch("256MB") as scratch:
        assert spec.source is not None
        relation = DuckDBSource(harness.warehouse).relation(scratch.con, scratch.db, spec.source, None)
        where = f"sync {spec.name}: model {spec.model}"
        model = Model.of(scratch.con, relation, spec.settings.columns, scratch.table("renamed"), where)
        shaper = (
            PostgresDestination(spec, None, True)  # type: ignore[arg-type]
            if spec.settings.kind == "postgres"
            else RedisDestination(spec, None)  # type: ignore[arg-type]
        )
        records = Records(scratch.con, scratch.shared, spec, model, shaper.shape(model))
        ids = ", ".join(f'{expr} as "{name}"' for name, expr in records.shape.identity.items())
        scratch.con.execute(
            f"create table empty_state as select {ids}, null::bigint as fingerprint, true as recorded "
            f"from {relation} limit 0"
        )
        records.classify("empty_state", None)
        yield records


def test_source_streams_bounded_batches_and_flags_bad_keys(offline_harness: Harness) -> None:
    offline_harness.model(
        "things",
        """select * from (values (1, 'a', 'A', 1.5), (1, 'b', 'B', 2.5), (2, 'a', 'C', 3.5), (2, 'b', 'D', 1),
                                 (3, 'a', 'E', 1), (3, 'a', 'F', 2), (null, 'x', 'G', 3)) t(shop_id, sku, label, price)""",
    )
    for records in classified(offline_harness, offline_harness.specs["shop_things"]):  # batch_rows: 2
        plan = records.classify("empty_state", None)
        rejected = [b.to_pylist() for b in records.rejected()]
        batches = list(records.records())
    assert (plan.new, plan.changed, plan.unchanged, plan.rows) == (4, 0, 0, 4)
    assert [len(b) for b in rejected] == [2, 1]
    flat = [r for b in rejected for r in b]
    assert [(json.loads(r[ROW_KEY]), r[REASON]) for r in flat] == [
        ({"shop_id": 3, "sku": "a"}, "duplicate key: 2 rows share it"),
        ({"shop_id": 3, "sku": "a"}, "duplicate key: 2 rows share it"),
        ({"shop_id": None, "sku": "x"}, "NULL in key column(s): shop_id"),
    ]
    assert [b.num_rows for b in batches] == [2, 2]  # memory: one batch of batch_rows at a time
    rows = [r for b in batches for r in b.to_pylist()]
    assert [(r["shop_id"], r["sku"], r["title"]) for r in rows] == [
        (1, "a", "A"),
        (1, "b", "B"),
        (2, "a", "C"),
        (2, "b", "D"),
    ]
    assert (rows[0]["shop_id"], rows[0]["sku"]) == (1, "a")  # the identity: the key columns, typed
    assert len({r[FINGERPRINT] for r in rows}) == 4 and all(r[ROWS] == 1 for r in rows)


def test_source_groups_redis_list_values_in_order(offline_harness: Harness) -> None:
    offline_harness.model(
        "recos",
        "select * from (values (1, 10, 0.5, 2), (1, 11, 0.9, 1), (2, 12, 0.3, 1)) t(user_id, item_id, score, recommendation_rank)",
    )
    for records in classified(offline_harness, offline_harness.specs["reco"]):
        classified_rows = [r for b in records.records(rendered=False) for r in b.to_pylist()]
        rows = [r for b in records.records() for r in b.to_pylist()]
    assert [(r[TARGET], r[ROWS]) for r in classified_rows] == [("reco:1", 2), ("reco:2", 1)]
    assert [r[TARGET] for r in rows] == ["reco:1", "reco:2"]
    assert json.loads(rows[0][VALUE]) == [
        {"item_id": 11, "score": 0.9, "recommendation_rank": 1},
        {"item_id": 10, "score": 0.5, "recommendation_rank": 2},
    ]


def test_missing_key_column_is_a_clear_error(offline_harness: Harness) -> None:
    offline_harness.model("things", "select 1 as shop_id, 'A' as label, 1.0 as price, 'x' as sku_code")
    with pytest.raises(SyncError, match=r"sync shop_things: model things.*\['sku'\].* not in the model"):
        next(classified(offline_harness, offline_harness.specs["shop_things"]))


def test_the_manifest_plain_dbt_wrote_for_a_target_is_found(
    fixture_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a plain `dbt build --target postgres` (its manifest in target/, not target/postgres/),
    a Postgres sync finds it; a DuckDB sync refuses it, with the command that fixes it."""
    from reverse_etl.spec import manifest_path

    manifest = json.loads(fixture_manifest.read_text())
    manifest["metadata"]["adapter_type"] = "postgres"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path))
    assert manifest_path("postgres") == tmp_path / "manifest.json"
    specs, _invalid = load_syncs(target="postgres")
    assert {s.name for s in specs} >= {"crm_segments", "reco"} and {s.warehouse for s in specs} == {"postgres"}
    with pytest.raises(SyncError, match="was built for target postgres") as refused:
        load_syncs(target="duckdb")
    assert refused.value.hint and "roundtrip dbt manifest --target duckdb" in refused.value.hint
