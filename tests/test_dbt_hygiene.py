"""`dbt parse` is clean: no deprecation warning, and the docs overview links what exists.

dbt validates the YAML against its JSON schemas (and so reports properties that moved under
`config:`, such as an exposure's `meta`) only for some adapters: BigQuery among them, not DuckDB
or Postgres. So the project is parsed for BigQuery (offline: nothing listens on the API
endpoint, no credentials) and for DuckDB, each time into a fresh target folder without partial
parsing, and the JSON events of dbt's own log are read, not only its console output.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from roundtrip.core.dbt import dbt_command
from roundtrip.core.paths import PROJECT_ROOT
from tests.dbt_support import DbtProject, base_environment
from tests.test_models_bigquery import OFFLINE


@dataclass(frozen=True)
class Parse:
    output: str  # what dbt printed
    events: list[dict[str, Any]]  # dbt.log, one JSON event a line
    manifest: dict[str, Any]


def parse(folder: Path, target: str, extra: dict[str, str] | None = None) -> Parse:
    project = DbtProject(folder / "target", base_environment(folder / "unused.duckdb", extra))
    output = project.run(
        "--log-format-file", "json", "parse", "--no-partial-parse", "--show-all-deprecations", target=target
    )
    log = folder / "target" / "logs" / "dbt.log"
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return Parse(output, events, json.loads((folder / "target" / "manifest.json").read_text()))


@pytest.fixture(scope="module", params=["bigquery", "duckdb", "bigquery, medallion_engine spark"])
def parsed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Parse:
    """The project as each target parses it, and with the other engine of the medallion (its
    sources, materializations and test configs come into play)."""
    target, _, engine = request.param.partition(", medallion_engine ")
    extra = {**(OFFLINE if target == "bigquery" else {}), **({"ROUNDTRIP_MEDALLION_ENGINE": engine} if engine else {})}
    return parse(tmp_path_factory.mktemp(f"parse-{target}"), target, extra)


def deprecations(result: Parse) -> list[str]:
    found = [
        f"{event['info']['name']}: {event['info'].get('msg', '')}"
        for event in result.events
        if "Deprecation" in event["info"]["name"]
    ]
    printed = [line for line in result.output.splitlines() if re.search(r"Deprecat", line)]
    return found + printed


def test_parse_prints_no_deprecation(parsed: Parse) -> None:
    assert len(parsed.events) > 10, "dbt.log holds dbt's events"
    assert deprecations(parsed) == []


def test_deprecations_are_seen_when_there_are_some(tmp_path: Path) -> None:
    """The check itself: a tiny project with the old layout (an exposure's top-level `meta`, a
    source's top-level `freshness`) makes the same BigQuery parse report both."""
    project_dir = tmp_path / "old_layout"
    (project_dir / "models").mkdir(parents=True)
    (project_dir / "dbt_project.yml").write_text(
        "name: old_layout\nversion: '0.1.0'\nconfig-version: 2\nprofile: roundtrip\nmodel-paths: [models]\n"
    )
    (project_dir / "models" / "things.sql").write_text("select * from {{ source('app', 'things') }}\n")
    (project_dir / "models" / "_old.yml").write_text(
        "version: 2\n"
        "sources:\n"
        "  - name: app\n"
        "    freshness: {warn_after: {count: 1, period: day}}\n"
        "    loaded_at_field: _loaded_at\n"
        "    tables: [{name: things}]\n"
        "exposures:\n"
        "  - name: things_sync\n"
        "    type: application\n"
        "    owner: {name: tests, email: tests@example.com}\n"
        "    depends_on: [ref('things')]\n"
        "    meta: {sync: {destination: postgres, target: x.things, primary_key: [id]}}\n"
    )
    command = dbt_command(
        ["--no-use-colors", "--log-format-file", "json", "parse", "--no-partial-parse", "--show-all-deprecations"],
        target="bigquery",
        target_path=tmp_path / "target",
        project_dir=project_dir,
    )
    env = base_environment(tmp_path / "unused.duckdb", OFFLINE)
    done = subprocess.run(command, cwd=project_dir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:]
    log = (tmp_path / "target" / "logs" / "dbt.log").read_text()
    found = deprecations(Parse(done.stdout, [json.loads(line) for line in log.splitlines() if line], {}))
    moved = [d for d in found if d.startswith("PropertyMovedToConfigDeprecation")]
    assert any("`meta`" in d and "exposures[0]" in d for d in moved), found
    assert any("`freshness`" in d and "sources[0]" in d for d in moved), found


def declared_exposures() -> set[str]:
    """The exposures the project's YAML files declare, read from the files themselves."""
    names: set[str] = set()
    for path in (PROJECT_ROOT / "models").rglob("*.yml"):
        document = yaml.safe_load(path.read_text()) or {}
        names |= {exposure["name"] for exposure in document.get("exposures") or []}
    return names


def test_the_syncs_keep_their_meta_under_config(parsed: Parse) -> None:
    """reverse_etl reads `config.meta.sync` (or a top-level `meta`): every exposure the files
    declare is in the manifest, with its sync under `config`."""
    exposures = parsed.manifest["exposures"].values()
    assert {exposure["name"] for exposure in exposures} == declared_exposures() != set()
    assert all(exposure["config"]["meta"]["sync"]["destination"] for exposure in exposures)  # a connection name


def test_reverse_etl_reads_every_sync_from_this_manifest(parsed: Parse, tmp_path: Path) -> None:
    """Each exposure becomes the spec its YAML says: its model, destination and mode; a replace
    sync refreshes children of its own model only."""
    from reverse_etl.spec import load_specs

    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(parsed.manifest))
    specs = {spec.name: spec for spec in load_specs(path)}
    exposures = {e["name"]: e for e in parsed.manifest["exposures"].values()}
    assert sorted(specs) == sorted(exposures)
    nodes, children = parsed.manifest["nodes"], parsed.manifest["child_map"]
    for name, spec in specs.items():
        declared = exposures[name]["config"]["meta"]["sync"]
        (model,) = [uid for uid in exposures[name]["depends_on"]["nodes"] if uid.startswith("model.")]
        assert (spec.model, spec.settings.destination, spec.mode) == (
            nodes[model]["name"],
            declared["destination"],
            declared.get("mode", "upsert"),
        ), name
        assert spec.settings.kind in ("postgres", "redis"), name  # the connection it names exists
        assert {r.name for r in spec.refresh} <= {nodes[c]["name"] for c in children[model] if c in nodes}, name
    if any(n["fqn"][1:2] == ["serving"] for n in nodes.values()):
        refreshed = {r.name for spec in specs.values() for r in spec.refresh}
        assert refreshed, "the serving models are refreshed after the replace syncs"


def test_the_docs_overview_tells_the_circle_and_links_what_exists(parsed: Parse) -> None:
    """The overview (models/overview.md) links nothing that is gone, and shows each layer and
    the syncs with at least one example; it is a tour, not a list to keep up to date."""
    manifest = parsed.manifest
    overview = manifest["docs"]["doc.roundtrip.__overview__"]["block_contents"]
    assert "apps → loaders → warehouse → dbt layers → reverse syncs" in overview
    links = re.findall(r"\(#!/(model|source|exposure)/([\w.]+)\)", overview)
    known = {**manifest["nodes"], **manifest["sources"], **manifest["exposures"]}
    assert [uid for _, uid in links if uid not in known] == []
    linked = {uid for _, uid in links}
    assert linked & set(manifest["exposures"]), "a sync is linked"
    layers = {n["fqn"][1] for n in manifest["nodes"].values() if n["resource_type"] == "model" and len(n["fqn"]) > 2}
    shown = {known[uid]["fqn"][1] for uid in linked if uid.startswith("model.")}
    assert layers <= shown, f"a model of each layer is linked: {sorted(layers - shown)} are not"
