"""dbt-project-evaluator's main rules, adapted to roundtrip's layers, checked on dbt's manifest.

dbt-project-evaluator is a dbt package (from the hub, which is not reachable here) that turns the
manifest into tables and flags what breaks dbt Labs' modelling rules. The same rules are checked
here in Python on the manifest of a fresh `dbt parse`, with the project's own layers, declared
once under `vars: project_layers` in dbt_project.yml (docs/models.md, "Layer rules"): which
folder is which layer, what each layer may read, the naming of each layer, and the exceptions,
each with its reason.

Every rule is a function of (manifest, layer config) returning its violations. The project must
have none; and each rule is shown to fire on a real violation, made by changing one thing in a
copy of the parsed manifest.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from roundtrip.core.paths import PROJECT_ROOT
from tests.dbt_support import DbtProject, base_environment

Manifest = dict[str, Any]
Config = dict[str, Any]

PROJECT = "roundtrip"
# resources that are part of the DAG a build runs (tests, unit tests and analyses are not)
DAG_TYPES = ("model", "seed", "snapshot")


def layer_config() -> Config:
    """`vars: project_layers` of dbt_project.yml (plain YAML: dbt does not read it)."""
    project = yaml.safe_load((PROJECT_ROOT / "dbt_project.yml").read_text())
    return project["vars"]["project_layers"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    import json

    folder = tmp_path_factory.mktemp("rules")
    project = DbtProject(folder / "target", base_environment(folder / "unused.duckdb"))
    project.run("parse", "--no-partial-parse")
    return json.loads((folder / "target" / "manifest.json").read_text())


# ---------------------------------------------------------------------------- the graph


@dataclass(frozen=True)
class Violation:
    rule: str
    subject: str  # the model, source, exposure... at fault (its name)
    parent: str | None
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}"


class Graph:
    """The manifest's nodes, with parents taken from each node's `depends_on` (so that a test
    changes one place) and the layer of every model (its folder under models/)."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.nodes: dict[str, dict[str, Any]] = {
            uid: node for uid, node in manifest["nodes"].items() if node.get("package_name") == PROJECT
        }
        self.sources: dict[str, dict[str, Any]] = manifest["sources"]
        self.exposures: dict[str, dict[str, Any]] = manifest["exposures"]
        self.children: dict[str, list[str]] = {}
        for node in [*self.dag_nodes(), *self.exposures.values()]:
            for parent in self.parents(node):
                self.children.setdefault(parent, []).append(node["unique_id"])

    def dag_nodes(self) -> list[dict[str, Any]]:
        return [self.nodes[uid] for uid in sorted(self.nodes) if self.nodes[uid]["resource_type"] in DAG_TYPES]

    def models(self) -> list[dict[str, Any]]:
        return [node for node in self.dag_nodes() if node["resource_type"] == "model"]

    def tests(self) -> list[dict[str, Any]]:
        return [n for n in self.nodes.values() if n["resource_type"] == "test"]

    @staticmethod
    def parents(node: dict[str, Any]) -> list[str]:
        return list(dict.fromkeys(node.get("depends_on", {}).get("nodes", [])))

    def node(self, uid: str) -> dict[str, Any]:
        return self.nodes.get(uid) or self.sources.get(uid) or self.exposures[uid]

    def name(self, uid: str) -> str:
        node = self.node(uid)
        if node["resource_type"] == "source":
            return f"{node['source_name']}.{node['name']}"
        return str(node["name"])

    @staticmethod
    def layer_of(node: dict[str, Any]) -> str | None:
        """A model's folder under models/ (None for a file at the root of models/)."""
        fqn = node["fqn"]
        return fqn[1] if len(fqn) > 2 else None

    def kind(self, uid: str) -> str:
        """What a parent is, in the terms of `parents:` in the layer config."""
        node = self.node(uid)
        if node["resource_type"] == "model":
            return self.layer_of(node) or "<no layer>"
        return str(node["resource_type"])

    def model_children(self, uid: str) -> list[str]:
        return [c for c in self.children.get(uid, []) if c.startswith("model.")]


# ---------------------------------------------------------------------------- the rules

Rule = Callable[[Graph, Config], Iterator[Violation]]
RULES: dict[str, Rule] = {}


def rule(function: Rule) -> Rule:
    RULES[function.__name__] = function
    return function


@rule
def model_directories(graph: Graph, config: Config) -> Iterator[Violation]:
    """Every model lives in the folder of a declared layer; a staging model in
    staging/<source>/, the folder of the source it reads (evaluator: fct_model_directories)."""
    for node in graph.models():
        layer = graph.layer_of(node)
        if layer not in config["layers"]:
            yield Violation(
                "model_directories", node["name"], None, f"{node['original_file_path']}: not in a layer folder"
            )
            continue
        if layer == "staging":
            sources = {graph.node(p)["source_name"] for p in graph.parents(node) if p.startswith("source.")}
            folder = node["fqn"][2] if len(node["fqn"]) > 3 else None
            if sources and folder not in sources:
                yield Violation(
                    "model_directories",
                    node["name"],
                    None,
                    f"{node['original_file_path']}: a staging model of source {sorted(sources)} lives in staging/<source>/",
                )


@rule
def naming_conventions(graph: Graph, config: Config) -> Iterator[Violation]:
    """Names match their layer's pattern (stg_<source>__<table>, int_..., ..._mv); a staging
    model is named after the source it reads (evaluator: fct_model_naming_conventions)."""
    for node in graph.models():
        layer = graph.layer_of(node)
        if layer not in config["layers"]:
            continue
        pattern = config["layers"][layer]["name"]
        if not re.search(pattern, node["name"]):
            yield Violation(
                "naming_conventions", node["name"], None, f"{node['name']} ({layer}) does not match {pattern}"
            )
        if layer == "staging":
            for parent in graph.parents(node):
                if parent.startswith("source."):
                    source = graph.node(parent)["source_name"]
                    if not node["name"].startswith(f"stg_{source}__"):
                        yield Violation(
                            "naming_conventions",
                            node["name"],
                            None,
                            f"{node['name']} reads source {source}: stg_{source}__...",
                        )


@rule
def staging_reads_one_source(graph: Graph, config: Config) -> Iterator[Violation]:
    """A staging model depends on exactly one source and nothing else (evaluator:
    fct_multiple_sources_joined, fct_staging_dependent_on_staging, fct_direct_join_to_source)."""
    for node in graph.models():
        if graph.layer_of(node) != "staging":
            continue
        parents = graph.parents(node)
        if len(parents) != 1 or not parents[0].startswith("source."):
            names = [graph.name(p) for p in parents]
            yield Violation(
                "staging_reads_one_source", node["name"], None, f"{node['name']} reads {names}: one source only"
            )


@rule
def sources_only_in_staging(graph: Graph, config: Config) -> Iterator[Violation]:
    """Nothing outside staging reads a source directly (evaluator:
    fct_marts_or_intermediate_dependent_on_source); snapshots included."""
    for node in graph.dag_nodes():
        if node["resource_type"] == "model" and graph.layer_of(node) == "staging":
            continue
        for parent in graph.parents(node):
            if parent.startswith("source."):
                yield Violation(
                    "sources_only_in_staging",
                    node["name"],
                    graph.name(parent),
                    f"{node['name']} reads source {graph.name(parent)}: only staging reads sources",
                )


@rule
def source_fanout(graph: Graph, config: Config) -> Iterator[Violation]:
    """Each source table is read by one node, its staging model (evaluator: fct_source_fanout)."""
    for uid in sorted(graph.sources):
        readers = graph.children.get(uid, [])
        if len(readers) > 1:
            names = sorted(graph.name(r) for r in readers)
            yield Violation("source_fanout", graph.name(uid), None, f"source {graph.name(uid)} is read by {names}")


@rule
def unused_sources(graph: Graph, config: Config) -> Iterator[Violation]:
    """Every declared source table is read (evaluator: fct_unused_sources)."""
    for uid in sorted(graph.sources):
        if not graph.children.get(uid):
            yield Violation("unused_sources", graph.name(uid), None, f"source {graph.name(uid)} is never read")


@rule
def root_models(graph: Graph, config: Config) -> Iterator[Violation]:
    """Every model reads something (evaluator: fct_root_models): a model without parents
    hard-codes its data or its relations."""
    for node in graph.models():
        if not graph.parents(node):
            yield Violation("root_models", node["name"], None, f"{node['name']} has no parents")


@rule
def layer_parents(graph: Graph, config: Config) -> Iterator[Violation]:
    """A model reads only what its layer may read: the layer below, its own layer where declared,
    seeds where declared. Reaching back past a layer (marts reading staging) or forward (staging
    reading marts) is a violation; snapshots read `snapshot_parents` only."""
    for node in graph.dag_nodes():
        if node["resource_type"] == "model":
            layer = graph.layer_of(node)
            if layer not in config["layers"]:
                continue  # model_directories says so
            allowed, what = config["layers"][layer]["parents"], f"{layer} model {node['name']}"
        elif node["resource_type"] == "snapshot":
            allowed, what = config["snapshot_parents"], f"snapshot {node['name']}"
        else:
            continue
        for parent in graph.parents(node):
            kind = graph.kind(parent)
            if kind not in allowed:
                yield Violation(
                    "layer_parents",
                    node["name"],
                    graph.name(parent),
                    f"{what} reads {kind} {graph.name(parent)} (allowed: {', '.join(allowed)})",
                )


@rule
def descriptions(graph: Graph, config: Config) -> Iterator[Violation]:
    """Models, sources and their tables, seeds, snapshots and exposures are described
    (evaluator: fct_undocumented_models, fct_undocumented_sources, fct_undocumented_source_tables)."""
    described: list[tuple[str, str]] = [
        (f"{n['resource_type']} {n['name']}", n.get("description") or "") for n in graph.dag_nodes()
    ]
    for node in graph.sources.values():
        described.append((f"source {node['source_name']}", node.get("source_description") or ""))
        described.append((f"source table {node['source_name']}.{node['name']}", node.get("description") or ""))
    described += [(f"exposure {n['name']}", n.get("description") or "") for n in graph.exposures.values()]
    for what, text in sorted(set(described)):
        if not text.strip():
            yield Violation("descriptions", what.split()[-1], None, f"{what} has no description")


def _test_kwargs(test: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    meta = test.get("test_metadata") or {}
    return str(meta.get("name") or ""), dict(meta.get("kwargs") or {})


@rule
def primary_key_tests(graph: Graph, config: Config) -> Iterator[Violation]:
    """Every model and snapshot has a primary-key test (evaluator: fct_missing_primary_key_tests):
    `unique` and `not_null` on the same column, or a test of `primary_key_tests` (a unique
    combination of columns). A test with a `where` filter checks part of the rows: it does not count."""
    keyed: dict[str, set[str]] = {}  # node -> columns with unique / not_null, or "*" for a combination
    unique: dict[str, set[str]] = {}
    not_null: dict[str, set[str]] = {}
    for test in graph.tests():
        attached = test.get("attached_node")
        if not attached or test["config"].get("where"):
            continue
        name, kwargs = _test_kwargs(test)
        column = test.get("column_name") or kwargs.get("column_name")
        if name in config["primary_key_tests"]:
            keyed.setdefault(attached, set()).add("*")
        elif name == "unique" and column:
            unique.setdefault(attached, set()).add(column)
        elif name == "not_null" and column:
            not_null.setdefault(attached, set()).add(column)
    for node in graph.dag_nodes():
        if node["resource_type"] not in ("model", "snapshot"):
            continue
        uid = node["unique_id"]
        if keyed.get(uid) or unique.get(uid, set()) & not_null.get(uid, set()):
            continue
        yield Violation(
            "primary_key_tests", node["name"], None, f"{node['resource_type']} {node['name']} has no primary-key test"
        )


@rule
def exposure_parents(graph: Graph, config: Config) -> Iterator[Violation]:
    """Exposures (the reverse syncs) read models of `exposure_parents` layers only, never a
    source; each such model is public, in a group, a table, with an enforced contract (evaluator:
    fct_exposure_parents_materializations, fct_exposures_dependent_on_private_models)."""
    for exposure in sorted(graph.exposures.values(), key=lambda e: e["name"]):
        for parent in graph.parents(exposure):
            kind = graph.kind(parent)
            if kind not in config["exposure_parents"]:
                yield Violation(
                    "exposure_parents",
                    exposure["name"],
                    graph.name(parent),
                    f"exposure {exposure['name']} reads {kind} {graph.name(parent)} (allowed: {', '.join(config['exposure_parents'])})",
                )
            if not parent.startswith("model."):
                continue
            node = graph.node(parent)
            problems = [
                *([f"access {node.get('access')}"] if node.get("access") != "public" else []),
                *(["no group"] if not node.get("group") else []),
                *(
                    [f"materialized {node['config']['materialized']}"]
                    if node["config"]["materialized"] != "table"
                    else []
                ),
                *(["no enforced contract"] if not node.get("contract", {}).get("enforced") else []),
            ]
            if problems:
                yield Violation(
                    "exposure_parents",
                    exposure["name"],
                    None,
                    f"exposure {exposure['name']} reads {node['name']}: {', '.join(problems)} "
                    "(synced models are public tables of a group, with an enforced contract)",
                )


@rule
def model_fanout(graph: Graph, config: Config) -> Iterator[Violation]:
    """No model has `models_fanout_threshold` or more leaf children, models nothing reads (not
    even an exposure): logic that belongs in one model downstream (evaluator: fct_model_fanout)."""
    threshold = config["models_fanout_threshold"]
    for node in graph.models():
        leaves = sorted(graph.name(c) for c in graph.model_children(node["unique_id"]) if not graph.children.get(c))
        if len(leaves) >= threshold:
            yield Violation(
                "model_fanout", node["name"], None, f"{node['name']} has {len(leaves)} leaf children {leaves}"
            )


@rule
def rejoining_of_upstream_concepts(graph: Graph, config: Config) -> Iterator[Violation]:
    """No A -> B -> C where C also reads A and B has no other child: B belongs inside C
    (evaluator: fct_rejoining_of_upstream_concepts)."""
    for node in graph.dag_nodes():
        children = set(graph.model_children(node["unique_id"]))
        for middle in sorted(children):
            downstream = graph.children.get(middle, [])
            if len(downstream) == 1 and downstream[0] in children:
                yield Violation(
                    "rejoining_of_upstream_concepts",
                    graph.name(middle),
                    None,
                    f"{node['name']} -> {graph.name(middle)} -> {graph.name(downstream[0])}, which also reads "
                    f"{node['name']}: {graph.name(middle)} has no other child",
                )


_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
# `extract(year from t.col)` and `a is distinct from t.col` are not relations
_NOT_RELATIONS = re.compile(r"\bextract\s*\([^()]*\)|\bdistinct\s+from\b", re.I)
_HARD_CODED = re.compile(r"\b(?:from|join)\s+((?:\"?[A-Za-z_][\w$]*\"?\.){1,2}\"?[A-Za-z_][\w$]*\"?)(?!\s*\()", re.I)


@rule
def hard_coded_references(graph: Graph, config: Config) -> Iterator[Violation]:
    """Models and snapshots name relations only through ref() and source() (evaluator:
    fct_hard_coded_references): a `from schema.table` outside Jinja hides an edge from the DAG."""
    for node in graph.dag_nodes():
        if node["resource_type"] == "seed":
            continue
        code = _NOT_RELATIONS.sub(" ", _COMMENT.sub(" ", _JINJA.sub(" ", node.get("raw_code") or "")))
        for match in _HARD_CODED.finditer(code):
            yield Violation(
                "hard_coded_references", node["name"], None, f"{node['name']} reads {match[1]} without ref()"
            )


@rule
def source_freshness(graph: Graph, config: Config) -> Iterator[Violation]:
    """Every source table has a `loaded_at_field` and a freshness with both `warn_after` and
    `error_after`, so that `dbt source freshness` can fail, not only warn."""
    for node in sorted(graph.sources.values(), key=lambda n: n["unique_id"]):
        freshness = node.get("freshness") or {}
        missing = [key for key in ("warn_after", "error_after") if not (freshness.get(key) or {}).get("count")] + (
            [] if node.get("loaded_at_field") else ["loaded_at_field"]
        )
        if missing:
            yield Violation(
                "source_freshness",
                graph.name(node["unique_id"]),
                None,
                f"source {graph.name(node['unique_id'])}: no {', '.join(missing)}",
            )


@rule
def exposure_urls(graph: Graph, config: Config) -> Iterator[Violation]:
    """Every exposure says where its application is (`url`) and who owns it."""
    for exposure in sorted(graph.exposures.values(), key=lambda n: n["name"]):
        owner = exposure.get("owner") or {}
        if not exposure.get("url") or not owner.get("name") or not owner.get("email"):
            yield Violation(
                "exposure_urls",
                exposure["name"],
                None,
                f"exposure {exposure['name']}: needs a url and an owner with an email",
            )


@rule
def group_owners(graph: Graph, config: Config) -> Iterator[Violation]:
    """Every group has an owner with a name and an email (dbt only requires one of them)."""
    for group in graph.manifest.get("groups", {}).values():
        owner = group.get("owner") or {}
        if not owner.get("name") or not owner.get("email"):
            yield Violation(
                "group_owners", group["name"], None, f"group {group['name']}: needs an owner name and email"
            )


# ---------------------------------------------------------------------------- exceptions


def _exception_subjects(entry: dict[str, Any]) -> list[str]:
    return list(entry.get("models") or entry.get("exposures") or [])


def _excepted(violation: Violation, exceptions: list[dict[str, Any]]) -> bool:
    return any(
        entry["rule"] == violation.rule
        and violation.subject in _exception_subjects(entry)
        and entry.get("parent") in (None, violation.parent)
        for entry in exceptions
    )


def check(manifest: Manifest, config: Config, only: str | None = None) -> list[str]:
    """Every violation the rules find (one rule: `only`), less the declared exceptions."""
    graph = Graph(manifest)
    found = [v for name, function in RULES.items() if only in (None, name) for v in function(graph, config)]
    return [str(v) for v in found if not _excepted(v, config.get("exceptions", []))]


def stale_exceptions(manifest: Manifest, config: Config) -> list[str]:
    """Exceptions without a reason, naming an unknown rule, or matching no violation at all."""
    graph = Graph(manifest)
    found = [v for function in RULES.values() for v in function(graph, config)]
    problems = []
    for entry in config.get("exceptions", []):
        label = f"{entry.get('rule')} {_exception_subjects(entry)} <- {entry.get('parent')}"
        if entry.get("rule") not in RULES:
            problems.append(f"{label}: unknown rule")
        if not str(entry.get("reason") or "").strip():
            problems.append(f"{label}: no reason")
        for subject in _exception_subjects(entry):
            one = {**entry, "models": [subject], "exposures": None}
            if not any(_excepted(v, [one]) for v in found):
                problems.append(f"{label}: {subject} breaks no rule any more, drop it from the exceptions")
    return problems


# ---------------------------------------------------------------------------- the project


def test_the_layer_config_names_the_project_folders(manifest: Manifest) -> None:
    config = layer_config()
    folders = {Graph.layer_of(node) for node in Graph(manifest).models()}
    assert folders == set(config["layers"]) == {"staging", "intermediate", "silver", "gold", "marts", "serving"}
    assert len(Graph(manifest).models()) > 25


@pytest.mark.parametrize("rule_name", sorted(RULES))
def test_the_project_follows_the_rule(manifest: Manifest, rule_name: str) -> None:
    assert check(manifest, layer_config(), only=rule_name) == []


def test_every_exception_still_applies_and_says_why(manifest: Manifest) -> None:
    assert stale_exceptions(manifest, layer_config()) == []


def test_the_exceptions_are_the_known_ones(manifest: Manifest) -> None:
    """The exceptions hide exactly these violations: a new one is a decision, not a side effect."""
    config = layer_config()
    hidden = sorted(set(check(manifest, {**config, "exceptions": []})) - set(check(manifest, config)))
    assert hidden == sorted(
        [
            "[layer_parents] gold model item_performance reads staging stg_catalog__items (allowed: intermediate, seed)",
            "[layer_parents] marts model email_triggers reads staging stg_catalog__items (allowed: intermediate, marts, seed)",
            "[layer_parents] marts model enriched_user reads staging stg_app__users (allowed: intermediate, marts, seed)",
            "[layer_parents] marts model non_recommendable_items reads staging stg_catalog__items (allowed: intermediate, marts, seed)",
            "[layer_parents] marts model recommendable_items reads staging stg_catalog__items (allowed: intermediate, marts, seed)",
            "[layer_parents] marts model user_segments reads staging stg_app__users (allowed: intermediate, marts, seed)",
            "[model_fanout] int_valid_orders has 3 leaf children ['hourly_order_patterns', 'item_performance', 'user_funnel_metrics']",
            "[exposure_parents] exposure reporting_daily_gmv reads gold daily_gmv_metrics (allowed: marts)",
        ]
    )


def test_gold_and_marts_read_valid_rows_only_through_intermediate(manifest: Manifest) -> None:
    """The honest DAG: silver feeds only the intermediate valid-row models, which feed gold and marts."""
    graph = Graph(manifest)
    silver_children = {
        graph.name(c)
        for node in graph.models()
        if graph.layer_of(node) == "silver"
        for c in graph.children[node["unique_id"]]
    }
    assert silver_children == {"int_as_of", "int_valid_orders", "int_valid_clicks"}
    for node in graph.models():
        if graph.layer_of(node) == "gold":
            assert {graph.name(p) for p in graph.parents(node)} & {"int_valid_orders"}, node["name"]


# ---------------------------------------------------------------------------- each rule fires


def _uid(manifest: Manifest, name: str) -> str:
    found = [uid for uid, n in manifest["nodes"].items() if n["name"] == name and n["resource_type"] != "test"]
    assert len(found) == 1, name
    return found[0]


def _add_parent(manifest: Manifest, child: str, parent_uid: str) -> None:
    manifest["nodes"][_uid(manifest, child)]["depends_on"]["nodes"].append(parent_uid)


def _drop_parent(manifest: Manifest, child: str, parent: str) -> None:
    node = manifest["nodes"][_uid(manifest, child)]
    parent_uid = _uid(manifest, parent)
    node["depends_on"]["nodes"] = [p for p in node["depends_on"]["nodes"] if p != parent_uid]


def _new_model(manifest: Manifest, layer: str, name: str, parents: list[str], synced: bool = False) -> None:
    """A model; `synced`: public, in the group, contracted (what an exposure may read)."""
    manifest["nodes"][f"model.{PROJECT}.{name}"] = {
        "resource_type": "model",
        "package_name": PROJECT,
        "unique_id": f"model.{PROJECT}.{name}",
        "name": name,
        "fqn": [PROJECT, layer, name],
        "original_file_path": f"models/{layer}/{name}.sql",
        "description": f"Grain: one row per {name}.",
        "depends_on": {"nodes": [_uid(manifest, p) for p in parents], "macros": []},
        "config": {"materialized": "table"},
        "raw_code": "select 1 as id",
        "access": "public" if synced else "protected",
        "group": "reverse_syncs" if synced else None,
        "contract": {"enforced": synced},
    }


def _keyed(manifest: Manifest, name: str) -> None:
    """A unique_combination test on a new model, so that only the rule under test fires."""
    manifest["nodes"][f"test.{PROJECT}.pk_{name}"] = {
        "resource_type": "test",
        "package_name": PROJECT,
        "name": f"pk_{name}",
        "attached_node": f"model.{PROJECT}.{name}",
        "column_name": None,
        "test_metadata": {"name": "unique_combination", "kwargs": {"columns": ["id"]}},
        "config": {"where": None},
        "depends_on": {"nodes": [f"model.{PROJECT}.{name}"], "macros": []},
    }


def _move_model(manifest: Manifest, name: str, fqn: list[str]) -> None:
    manifest["nodes"][_uid(manifest, name)]["fqn"] = [PROJECT, *fqn]


def _rename_model(manifest: Manifest, name: str, new_name: str) -> None:
    manifest["nodes"][_uid(manifest, name)]["name"] = new_name


def _delete_tests(manifest: Manifest, model: str, test_name: str) -> None:
    uid = _uid(manifest, model)
    for key in [
        k
        for k, n in manifest["nodes"].items()
        if n["resource_type"] == "test" and n.get("attached_node") == uid and n["test_metadata"]["name"] == test_name
    ]:
        del manifest["nodes"][key]


def _filter_unique_test(manifest: Manifest, model: str) -> None:
    uid = _uid(manifest, model)
    for node in manifest["nodes"].values():
        if (
            node["resource_type"] == "test"
            and node.get("attached_node") == uid
            and node["test_metadata"]["name"] == "unique"
        ):
            node["config"]["where"] = "user_id > 100"


def _new_source_table(manifest: Manifest) -> None:
    uid = f"source.{PROJECT}.app.sessions"
    base = manifest["sources"][f"source.{PROJECT}.app.users"]
    manifest["sources"][uid] = {**base, "unique_id": uid, "name": "sessions"}


def _exposure(manifest: Manifest, name: str) -> dict[str, Any]:
    return manifest["exposures"][f"exposure.{PROJECT}.{name}"]


def _set(path: list[str], value: Any) -> Callable[[Manifest], None]:
    def change(manifest: Manifest) -> None:
        target: Any = manifest
        for key in path[:-1]:
            target = target[key]
        if value is None:
            target.pop(path[-1], None)
        else:
            target[path[-1]] = value

    return change


def _rejoin(manifest: Manifest) -> None:
    _new_model(manifest, "intermediate", "int_order_days", ["int_valid_orders"])
    _new_model(manifest, "marts", "order_days", ["int_valid_orders", "int_order_days"], synced=True)
    for name in ("int_order_days", "order_days"):
        _keyed(manifest, name)
    # order_days is read by a sync, so that it is no leaf and only the rejoin shows
    manifest["exposures"][f"exposure.{PROJECT}.reco_cache"]["depends_on"]["nodes"].append(f"model.{PROJECT}.order_days")


def _fan_out(manifest: Manifest) -> None:
    for name in ("segment_counts", "segment_shares", "segment_trends"):
        _new_model(manifest, "marts", name, ["user_segments"])
        _keyed(manifest, name)


def _private_sync(manifest: Manifest) -> None:
    node = manifest["nodes"][_uid(manifest, "user_segments")]
    node["access"], node["group"] = "protected", None


def _view_sync(manifest: Manifest) -> None:
    manifest["nodes"][_uid(manifest, "recommendations")]["config"]["materialized"] = "view"


MUTATIONS: list[tuple[str, Callable[[Manifest], None], str]] = [
    (
        "model_directories",
        lambda m: _move_model(m, "recommendations", ["reports", "recommendations"]),
        "models/marts/recommendations.sql: not in a layer folder",
    ),
    (
        "model_directories",
        lambda m: _move_model(m, "stg_app__users", ["staging", "events", "stg_app__users"]),
        "a staging model of source ['app'] lives in staging/<source>/",
    ),
    (
        "naming_conventions",
        lambda m: _rename_model(m, "recommendations", "int_recommendations"),
        "int_recommendations (marts)",
    ),
    (
        "naming_conventions",
        lambda m: _rename_model(m, "enriched_user_mv", "enriched_user_view"),
        "enriched_user_view (serving)",
    ),
    (
        "naming_conventions",
        lambda m: _rename_model(m, "stg_events__orders", "stg_bronze__orders"),
        "reads source events: stg_events__...",
    ),
    (
        "staging_reads_one_source",
        lambda m: _add_parent(m, "stg_app__users", _uid(m, "stg_catalog__items")),
        "stg_app__users reads ['app.users', 'stg_catalog__items']",
    ),
    (
        "staging_reads_one_source",
        lambda m: _add_parent(m, "stg_events__orders", f"source.{PROJECT}.events.clicks"),
        "stg_events__orders reads ['events.orders', 'events.clicks']",
    ),
    (
        "sources_only_in_staging",
        lambda m: _add_parent(m, "user_segments", f"source.{PROJECT}.app.users"),
        "user_segments reads source app.users",
    ),
    (
        "sources_only_in_staging",
        lambda m: _add_parent(m, "items_history", f"source.{PROJECT}.catalog.items"),
        "items_history reads source catalog.items",
    ),
    (
        "source_fanout",
        lambda m: _add_parent(m, "stg_events__clicks", f"source.{PROJECT}.events.orders"),
        "source events.orders is read by ['stg_events__clicks', 'stg_events__orders']",
    ),
    ("unused_sources", _new_source_table, "source app.sessions is never read"),
    ("root_models", lambda m: _drop_parent(m, "iris_zones", "insee_iris_zones"), "iris_zones has no parents"),
    (
        "layer_parents",
        lambda m: _add_parent(m, "recommendations", _uid(m, "stg_catalog__items")),
        "marts model recommendations reads staging stg_catalog__items",
    ),
    (
        "layer_parents",
        lambda m: _add_parent(m, "daily_gmv_metrics", _uid(m, "orders_clean")),
        "gold model daily_gmv_metrics reads silver orders_clean",
    ),
    (
        "layer_parents",
        lambda m: _add_parent(m, "stg_app__users", _uid(m, "user_segments")),
        "staging model stg_app__users reads marts user_segments",
    ),
    (
        "layer_parents",
        lambda m: _add_parent(m, "enriched_user_mv", _uid(m, "int_as_of")),
        "serving model enriched_user_mv reads intermediate int_as_of",
    ),
    (
        "layer_parents",
        lambda m: _add_parent(m, "items_history", _uid(m, "orders_clean")),
        "snapshot items_history reads silver orders_clean",
    ),
    (
        "descriptions",
        _set(["nodes", f"model.{PROJECT}.user_funnel_metrics", "description"], ""),
        "model user_funnel_metrics has no description",
    ),
    (
        "descriptions",
        _set(["sources", f"source.{PROJECT}.events.clicks", "description"], " "),
        "source table events.clicks has no description",
    ),
    (
        "descriptions",
        _set(["exposures", f"exposure.{PROJECT}.reco_cache", "description"], ""),
        "exposure reco_cache has no description",
    ),
    (
        "primary_key_tests",
        lambda m: _delete_tests(m, "stg_app__users", "unique"),
        "model stg_app__users has no primary-key test",
    ),
    (
        "primary_key_tests",
        lambda m: _delete_tests(m, "item_performance", "unique_combination"),
        "model item_performance has no primary-key test",
    ),
    (
        "primary_key_tests",
        lambda m: _filter_unique_test(m, "user_segments"),
        "model user_segments has no primary-key test",
    ),
    (
        "exposure_parents",
        lambda m: _exposure(m, "crm_user_segments")["depends_on"]["nodes"].append(_uid(m, "int_valid_orders")),
        "exposure crm_user_segments reads intermediate int_valid_orders",
    ),
    ("exposure_parents", _private_sync, "reads user_segments: access protected, no group"),
    ("exposure_parents", _view_sync, "reads recommendations: materialized view"),
    (
        "exposure_parents",
        _set(["nodes", f"model.{PROJECT}.iris_zones", "contract", "enforced"], False),
        "reads iris_zones: no enforced contract",
    ),
    (
        "model_fanout",
        _fan_out,
        "user_segments has 3 leaf children ['segment_counts', 'segment_shares', 'segment_trends']",
    ),
    ("rejoining_of_upstream_concepts", _rejoin, "int_valid_orders -> int_order_days -> order_days"),
    (
        "hard_coded_references",
        _set(["nodes", f"model.{PROJECT}.iris_zones", "raw_code"], "select * from reference.insee_iris_zones"),
        "iris_zones reads reference.insee_iris_zones without ref()",
    ),
    (
        "hard_coded_references",
        _set(["nodes", f"model.{PROJECT}.user_segments", "raw_code"], 'with u as (select * from "raw_app"."users")'),
        'user_segments reads "raw_app"."users" without ref()',
    ),
    (
        "source_freshness",
        _set(["sources", f"source.{PROJECT}.app.users", "freshness", "error_after"], None),
        "source app.users: no error_after",
    ),
    (
        "exposure_urls",
        _set(["exposures", f"exposure.{PROJECT}.crm_email_queue", "url"], None),
        "exposure crm_email_queue: needs a url",
    ),
    (
        "group_owners",
        _set(["groups", f"group.{PROJECT}.reverse_syncs", "owner"], {"name": "someone"}),
        "group reverse_syncs: needs an owner",
    ),
]


def test_every_rule_is_shown_to_fire() -> None:
    assert {name for name, _, _ in MUTATIONS} == set(RULES)


@pytest.mark.parametrize(
    ("rule_name", "mutate", "expected"), MUTATIONS, ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(MUTATIONS)]
)
def test_each_rule_fails_on_a_real_violation(
    manifest: Manifest, rule_name: str, mutate: Callable[[Manifest], None], expected: str
) -> None:
    changed = copy.deepcopy(manifest)
    mutate(changed)
    violations = check(changed, layer_config())
    assert [v for v in violations if v.startswith(f"[{rule_name}]") and expected in v], violations
    # and the change breaks only what it means to (rules overlap: a source read from a mart is
    # also a layer violation)
    assert all(any(v.startswith(f"[{r}]") for r in OVERLAPS.get(rule_name, set()) | {rule_name}) for v in violations), (
        violations
    )


OVERLAPS = {
    "sources_only_in_staging": {"layer_parents", "source_fanout"},
    "staging_reads_one_source": {"layer_parents", "source_fanout"},
    "source_fanout": {"staging_reads_one_source"},
    "model_directories": {"exposure_parents"},  # the moved model is a sync's
    "layer_parents": {"staging_reads_one_source"},  # staging reading a mart
}


def test_an_exception_that_no_longer_applies_fails(manifest: Manifest) -> None:
    changed = copy.deepcopy(manifest)
    _drop_parent(changed, "enriched_user", "stg_app__users")
    assert stale_exceptions(changed, layer_config()) == [
        "layer_parents ['user_segments', 'enriched_user'] <- stg_app__users: enriched_user breaks no rule any more, "
        "drop it from the exceptions"
    ]


def test_an_exception_needs_a_reason(manifest: Manifest) -> None:
    config = copy.deepcopy(layer_config())
    config["exceptions"][0]["reason"] = ""
    assert stale_exceptions(manifest, config) == [
        "layer_parents ['user_segments', 'enriched_user'] <- stg_app__users: no reason"
    ]
