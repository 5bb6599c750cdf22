"""``dbt run`` / ``dbt build`` on DuckDB against the same models' compiled SQL run directly.

At 10 x ``size`` orders (10 M for ``--size 1m``, the target's scale): dbt's fixed cost of
starting and parsing is what the target judges against the models' own work.

On one loaded warehouse and a byte copy of it (same bronze, same seeds): dbt compiles the
project once; then, interleaved, ``dbt run --full-refresh`` on one copy and, on the other, each
model's compiled SQL from the manifest, in dependency order, as ``create or replace view`` or
``table`` as its materialization says (incremental models as a full refresh, ephemeral ones
already inlined by dbt, the serving materialized views as tables as on DuckDB), in one DuckDB
connection. ``dbt build`` (models + data tests + unit tests) is reported against the same base.
"""

from __future__ import annotations

import json
import shutil
from graphlib import TopologicalSorter
from pathlib import Path

from benchmarks.core import Context, Result, environment, human, timed
from benchmarks.medallion_data import prepare
from roundtrip.core.dbt import run_dbt
from roundtrip.core.settings import load_settings

NAME = "dbt_overhead"


def compiled_models(manifest: Path) -> list[tuple[str, str, str]]:
    """(relation, materialization, compiled SQL) of every model, parents first."""
    nodes = json.loads(manifest.read_text())["nodes"]
    models = {uid: n for uid, n in nodes.items() if n["resource_type"] == "model" and n["config"]["enabled"]}
    graph = {uid: [d for d in n["depends_on"]["nodes"] if d in models] for uid, n in models.items()}
    out = []
    for uid in TopologicalSorter(graph).static_order():
        node = models[uid]
        kind = node["config"]["materialized"]
        if kind == "ephemeral":
            continue
        out.append((node["relation_name"], "view" if kind == "view" else "table", node["compiled_code"]))
    return out


def run_compiled(warehouse: Path, models: list[tuple[str, str, str]]) -> None:
    from roundtrip.core.duckdb_extensions import connect

    con = connect(warehouse)
    try:
        for relation, kind, sql in models:
            schema = relation.rsplit(".", 1)[0]
            con.execute(f"create schema if not exists {schema}")
            con.execute(f"create or replace {kind} {relation} as {sql}")
    finally:
        con.close()


def run_breakdown(target: Path) -> dict[str, float]:
    """Where a ``dbt run`` spent its time, from its run_results.json: the run phase's own
    elapsed time and the models' summed execution times (the rest of the wall time is dbt
    starting, parsing and compiling)."""
    results = json.loads((target / "run_results.json").read_text())
    models = [r for r in results["results"] if r["unique_id"].startswith("model.")]
    return {
        "run_phase_seconds": round(results["elapsed_time"], 2),
        "models_summed_seconds": round(sum(r["execution_time"] for r in models), 2),
        "slowest_models": {r["unique_id"].split(".")[-1]: round(r["execution_time"], 2)  # type: ignore[dict-item]
                           for r in sorted(models, key=lambda r: -r["execution_time"])[:5]},
    }  # fmt: skip


def run(ctx: Context) -> list[Result]:
    orders = ctx.size * 10
    data = prepare(ctx, orders, NAME)
    direct = data.folder / "direct" / data.warehouse.name  # same file name: same database name
    direct.parent.mkdir()
    shutil.copyfile(data.warehouse, direct)
    target = data.folder / "target"
    with environment(**data.env):
        run_dbt(["compile"], target="duckdb", target_path=target, quiet=True)
        models = compiled_models(target / "manifest.json")
        dbt_seconds, direct_seconds, breakdowns = [], [], []
        for _ in range(ctx.repeat):
            dbt_seconds.append(
                timed(lambda: run_dbt(["run", "--full-refresh"], target="duckdb", target_path=target, quiet=True))[0]
            )
            breakdowns.append(run_breakdown(target))
            direct_seconds.append(timed(lambda: run_compiled(direct, models))[0])
        build_seconds, _ = timed(
            lambda: run_dbt(["build", "--full-refresh"], target="duckdb", target_path=target, quiet=True)
        )
    base = min(direct_seconds)
    details = {"dbt_run_seconds": dbt_seconds, "compiled_seconds": direct_seconds, "models": len(models),
               "threads": load_settings().dbt_threads or "1 (profile default)", "dbt_run": breakdowns}  # fmt: skip
    return [
        Result(NAME, f"seconds, dbt run ({human(orders)} orders, {len(models)} models)", min(dbt_seconds), "s", base,
               "compiled SQL run directly in DuckDB", "<= 1.15", details=details),
        Result(NAME, f"seconds, dbt build with tests ({human(orders)} orders)", build_seconds, "s", base,
               "compiled SQL run directly in DuckDB", "<= 1.2", note="build adds the data and unit tests"),
    ]  # fmt: skip
