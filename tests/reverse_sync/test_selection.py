"""Selecting syncs as dbt selects nodes: names, globs, tag:, destination:, model:, state:modified,
unions, intersections, --exclude; over the real manifest of tests/fixtures/retl_project, and
through the CLI against the session's Postgres and Redis."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from reverse_etl.cli_options import chosen_syncs
from reverse_etl.errors import SyncError
from reverse_etl.selection import DeclaredSync, Selection, declared_syncs, modified_syncs
from reverse_etl.spec import load_syncs
from roundtrip.core.paths import PROJECT_ROOT

from .conftest import FIXTURE_PROJECT, Harness
from .test_cli import cli, json_lines


def manifest_of(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def chosen(declared: list[DeclaredSync], select: Sequence[str] = (), exclude: Sequence[str] = ()) -> set[str]:
    return set(Selection.parse(select, exclude).apply(declared))


def sync_cli(manifest: Path, data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m reverse_etl` on ``manifest``, with no server (commands that reach none)."""
    env = {**os.environ, "DBT_TARGET_PATH": str(manifest.parent), "ROUNDTRIP_DATA_DIR": str(data)}
    return subprocess.run(
        [sys.executable, "-m", "reverse_etl", *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True
    )


def names(declared: list[DeclaredSync], keep: Any) -> set[str]:
    return {s.name for s in declared if keep(s)}


# ---------------------------------------------------------------- the manifest as dbt wrote it


def test_tags_are_read_from_tags_and_config_tags(fixture_manifest: Path) -> None:
    """The fixture declares `tags: [crm]` on crm_segments and `config: {tags: [crm, queue]}` on queue_a."""
    declared = {s.name: s for s in declared_syncs(manifest_of(fixture_manifest))}
    assert declared["crm_segments"].tags == {"crm"}
    assert declared["queue_a"].tags == {"crm", "queue"}
    assert declared["shop_things"].tags == set()
    specs, invalid = load_syncs(fixture_manifest)
    assert set(declared) == {s.name for s in specs} | {i.name for i in invalid}  # every sync, nothing else


def test_set_semantics_as_dbt(fixture_manifest: Path) -> None:
    declared = declared_syncs(manifest_of(fixture_manifest))
    every = {s.name for s in declared}
    crm = names(declared, lambda s: "crm" in s.tags)
    redis_syncs = names(declared, lambda s: s.destination == "redis")
    postgres_syncs = names(declared, lambda s: s.destination == "postgres")
    assert crm and redis_syncs and postgres_syncs and redis_syncs | postgres_syncs == every

    assert chosen(declared) == every
    assert chosen(declared, ["all"]) == every
    assert chosen(declared, ["tag:crm"]) == crm
    # space-separated values: a union; comma-joined criteria: an intersection
    assert chosen(declared, ["tag:crm destination:redis"]) == crm | redis_syncs
    assert chosen(declared, ["tag:crm", "destination:redis"]) == crm | redis_syncs
    assert chosen(declared, ["tag:crm,destination:postgres"]) == crm & postgres_syncs
    assert chosen(declared, ["destination:postgres"], ["tag:crm"]) == postgres_syncs - crm
    assert chosen(declared, [], ["destination:redis"]) == postgres_syncs  # --exclude alone: from every sync
    # globs: names, models, destinations, tags; exposure: is dbt's spelling of a name
    assert chosen(declared, ["serving_*"]) == {n for n in every if n.startswith("serving_")}
    assert chosen(declared, ["exposure:reco"]) == {"reco"}
    on_segments = names(declared, lambda s: s.models == ("segments",))
    assert len(on_segments) > 1 and chosen(declared, ["model:segments"]) == on_segments
    assert chosen(declared, ["model:seg*"]) == on_segments
    assert chosen(declared, ["destination:re*"]) == redis_syncs
    assert chosen(declared, ["tag:q*"]) == names(declared, lambda s: "queue" in s.tags)


@pytest.mark.parametrize(
    ("select", "message"),
    [
        (["nope"], "no sync named 'nope'; declared: crm_segments, "),
        (["tag:crm nope_*"], "no sync matches 'nope_*'"),  # one typo in a union is not ignored
        (["tag:crm,destination:redis"], "no sync matches 'tag:crm,destination:redis'"),
        (["color:red"], "unknown method 'color'"),
        (["+tag:crm"], "graph operators"),
        (["tag:"], "tag: needs a value"),
        (["crm_segments,"], "empty criterion"),
        (["  "], "empty selector"),
        (["state:new"], "state:new is not supported"),
        (["state:modified"], "state:modified needs --state DIR"),
    ],
)
def test_a_selector_that_cannot_select_is_an_error_naming_it(
    fixture_manifest: Path, select: list[str], message: str
) -> None:
    declared = declared_syncs(manifest_of(fixture_manifest))
    with pytest.raises(SyncError) as raised:
        chosen(declared, select)
    assert message in str(raised.value)


def test_the_cli_options_keep_sync_as_an_alias_and_select_invalid_exposures(
    fixture_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = manifest_of(fixture_manifest)
    exposure = manifest["exposures"]["exposure.retl_fixture.reco"]
    (exposure.get("config", {}).get("meta") or exposure["meta"])["sync"]["mode"] = "replace"  # not for Redis
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path))
    specs, invalid = load_syncs(tmp_path / "manifest.json")
    assert [i.name for i in invalid] == ["reco"]

    def pick(sync: str | None = None, select: list[str] | None = None, exclude: list[str] | None = None) -> Any:
        valid, broken = chosen_syncs("duckdb", specs, invalid, sync, select, exclude, None)
        return {s.name for s in valid}, {i.name for i in broken}

    assert pick() == ({s.name for s in specs}, {"reco"})
    assert pick(sync="all") == pick()
    assert pick(sync="crm_segments") == ({"crm_segments"}, set())
    # an invalid exposure is selected like the others (its destination read from the raw meta), and reported
    redis_valid = {s.name for s in specs if s.settings.destination == "redis"}
    assert pick(select=["destination:redis"]) == (redis_valid, {"reco"})
    assert pick(sync="reco") == (set(), {"reco"})
    assert pick(select=["destination:redis"], exclude=["reco"]) == (redis_valid, set())


# ---------------------------------------------------------------- state:modified


def test_state_modified_follows_the_exposure_and_everything_upstream(fixture_manifest: Path) -> None:
    saved = manifest_of(fixture_manifest)
    declared = declared_syncs(saved)
    assert modified_syncs(saved, saved) == set()

    def edited(change: Any) -> dict[str, Any]:
        copy = json.loads(json.dumps(saved))
        change(copy)
        return copy

    # a parent of a parent: items_report reads items_export and segments; make segments read
    # items_export too (in both manifests), then change items_export alone
    def chain(m: dict[str, Any]) -> None:
        m["parent_map"]["model.retl_fixture.segments"] = ["model.retl_fixture.items_export"]

    before = edited(chain)

    def body(m: dict[str, Any]) -> None:
        chain(m)
        m["nodes"]["model.retl_fixture.items_export"]["checksum"]["checksum"] = "changed"

    reads = {s.name: s.models for s in declared}
    expected = {n for n, models in reads.items() if models and models[0] in ("segments", "items_export")}
    assert modified_syncs(edited(body), before) == expected

    def config(m: dict[str, Any]) -> None:
        m["nodes"]["model.retl_fixture.triggers"]["unrendered_config"]["materialized"] = "view"

    assert modified_syncs(edited(config), saved) == {n for n, models in reads.items() if models == ("triggers",)}

    macro = "macro.retl_fixture.generate_schema_name"

    def calls(m: dict[str, Any]) -> None:
        m["nodes"]["model.retl_fixture.recos"]["depends_on"]["macros"] = [macro]

    def macro_changed(m: dict[str, Any]) -> None:
        calls(m)
        m["macros"][macro]["macro_sql"] += "\n-- edited"

    assert modified_syncs(edited(macro_changed), edited(calls)) == {n for n, ms in reads.items() if ms == ("recos",)}

    # rendered values that differ between environments (a relation's database) are not a change
    def elsewhere(m: dict[str, Any]) -> None:
        for node in m["nodes"].values():
            node["relation_name"] = f'"prod".{node["relation_name"]}'

    assert modified_syncs(edited(elsewhere), saved) == set()


def test_state_modified_after_a_real_dbt_parse_through_the_cli(fixture_manifest: Path, tmp_path: Path) -> None:
    """The fixture project copied and edited (a model's SQL, an exposure's settings, a new
    exposure), parsed by dbt, and compared with the session's manifest through `list`."""
    project = tmp_path / "project"
    shutil.copytree(FIXTURE_PROJECT, project, ignore=shutil.ignore_patterns("target", "logs"))
    segments_sql = project / "models" / "marts" / "segments.sql"
    segments_sql.write_text(segments_sql.read_text() + "\n-- edited\n")
    exposures = project / "models" / "_exposures.yml"
    text = exposures.read_text()
    assert "ttl_seconds: 86400" in text
    exposures.write_text(
        text.replace("ttl_seconds: 86400", "ttl_seconds: 3600")
        + """
  - name: brand_new
    type: application
    owner: {name: tests}
    depends_on: [ref('things')]
    meta:
      sync: {destination: postgres, target: shop.new_things, primary_key: [shop_id, sku]}
"""
    )
    out = tmp_path / "out"
    env = {**os.environ, "ROUNDTRIP_DUCKDB_PATH": str(out / "w.duckdb"), "ROUNDTRIP_TARGET": "duckdb"}
    subprocess.run(
        [str(Path(sys.executable).parent / "dbt"), "--quiet", "parse", "--project-dir", str(project),
         "--profiles-dir", str(PROJECT_ROOT / "profiles"), "--target-path", str(out / "target"),
         "--log-path", str(out / "logs")],
        check=True, env=env, cwd=project,
    )  # fmt: skip
    current = out / "target" / "manifest.json"
    declared = declared_syncs(manifest_of(current))
    on_segments = {s.name for s in declared if s.models == ("segments",)}
    saved = str(fixture_manifest.parent)
    data = tmp_path / "data"

    listed = sync_cli(current, data, "list", "--json", "--select", "state:modified", "--state", saved)
    assert listed.returncode == 0, listed.stderr
    assert {r["sync"] for r in json_lines(listed)} == on_segments | {"reco", "brand_new"}

    narrowed = sync_cli(
        current, data, "list", "--json", "--select", "state:modified,destination:redis", "--exclude", "reco",
        "--state", saved,
    )  # fmt: skip
    redis_on_segments = {s.name for s in declared if s.name in on_segments and s.destination == "redis"}
    assert redis_on_segments and {r["sync"] for r in json_lines(narrowed)} == redis_on_segments

    # nothing modified is not an error: nothing to do (and no server is reached)
    same = sync_cli(fixture_manifest, data, "run", "--select", "state:modified", "--state", saved, "--json")
    assert same.returncode == 0 and "nothing selected" in same.stderr and same.stdout == "", same.stderr
    assert json.loads((data / "reverse_etl" / "run_results.json").read_text())["results"] == []
    missing = sync_cli(fixture_manifest, data, "list", "--select", "state:modified", "--state", str(tmp_path / "none"))
    assert missing.returncode == 1 and "no manifest.json there" in missing.stderr


# ---------------------------------------------------------------- through the CLI


SEGMENTS = "t(user_id, email, segment, lifetime_value)"
TRIGGERS = "t(trigger_id, user_id, trigger_type, payload)"


@pytest.mark.postgres
@pytest.mark.redis
def test_run_select_tag_runs_exactly_the_tagged_syncs(
    harness: Harness, fixture_manifest: Path, redis_client: redis.Redis
) -> None:
    declared = declared_syncs(manifest_of(fixture_manifest))
    tagged = {s.name for s in declared if "crm" in s.tags}
    harness.model("segments", f"select * from (values (1, 'a@example.com', 'regular', 1.00)) {SEGMENTS}")
    harness.model("triggers", f"select * from (values ('t1', 1, 'welcome', '{{}}')) {TRIGGERS}")

    # --select with its values as separate words, as dbt takes them
    done = cli(harness, fixture_manifest, "run", "--select", "tag:crm", "--json")
    assert done.returncode == 0, done.stderr
    assert {r["sync"] for r in json_lines(done)} == tagged
    assert {r[0] for r in harness.sql("select distinct sync from reverse_etl.runs")} == tagged
    tables = {f"{s}.{t}" for s, t in harness.sql("select table_schema, table_name from information_schema.tables")}
    written = {harness.specs[name].target for name in tagged}
    assert written <= tables
    untouched = {spec.target for name, spec in harness.specs.items() if name not in tagged} - written  # queue_b shares
    assert untouched and not untouched & tables and redis_client.dbsize() == 0
    assert harness.sql("select user_id, segment from crm.segments") == [(1, "regular")]

    again = cli(harness, fixture_manifest, "run", "--select", "tag:crm", "--exclude", "queue_*", "--json")
    second = {r["sync"] for r in json_lines(again)}
    assert again.returncode == 0 and second == {n for n in tagged if not n.startswith("queue_")}

    typo = cli(harness, fixture_manifest, "run", "--select", "tag:crm", "tag:crn")
    assert typo.returncode == 1 and "no sync matches 'tag:crn'; declared: " in typo.stderr
    assert harness.sql("select count(*) from reverse_etl.runs") == [
        (len(tagged) + len(second),)
    ]  # the typo ran nothing
