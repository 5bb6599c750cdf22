"""The serving refresh after the demo's replace syncs, against the ``dbt run`` it used to be.

On the demo's data (its default sizes, whatever ``--size`` says: these are the demo's views):
generate, load, ``dbt run`` on DuckDB for the manifest, then the demo's replace syncs into
Postgres, whose first run has dbt build the five serving materialized views. Then, interleaved,
the refresh those syncs leave due, done two ways on the same views and data:
``reverse_etl.refresh.refresh_together`` (what a sync runs now: the views refreshed in place, as
their definitions are the manifest's) and ``run_dbt_refresh``, the one ``dbt run --target
postgres --select <views>`` per invocation that every refresh was before (the baseline; the
fallback now). Both end in the same ``REFRESH MATERIALIZED VIEW CONCURRENTLY`` per view; the
statements alone are timed too, to show what the rest is.
"""

from __future__ import annotations

import time

from benchmarks.core import Context, Result, environment, interleaved
from benchmarks.medallion_data import prepare
from roundtrip.core.dbt import run_dbt
from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.dev.sample_data import SampleConfig

NAME = "serving_refresh"


def run(ctx: Context) -> list[Result]:
    from reverse_etl.engine import Connections, run_syncs
    from reverse_etl.refresh import refresh_in_place, refresh_together, run_dbt_refresh
    from reverse_etl.runs import connect
    from reverse_etl.spec import load_specs

    demo = SampleConfig()  # the demo's defaults
    data = prepare(ctx, demo.orders, NAME, demo)
    url = data.env["ROUNDTRIP_POSTGRES_URL"]
    target = data.folder / "target"
    with environment(**data.env):
        run_dbt(["run"], target="duckdb", target_path=target, quiet=True)
        specs = [s for s in load_specs(target / "manifest.json") if s.mode == "replace"]
        first = run_syncs(specs, Connections.of(postgres_url=url))  # the exports, and dbt builds the views
        failed = [f"{r.spec.name}: {r.error}" for r in first if not r.ok]
        if failed:
            raise RuntimeError(f"the demo's replace syncs failed: {failed}")
        due = [(s, [m.name for m in s.refresh]) for s in specs]
        models = {m.name: m for s in specs for m in s.refresh}
        views = sorted(models)

        with connect(url, NAME) as conn:
            check_refreshes_rows(conn, lambda: refresh_together(due, url, PROJECT_ROOT))

        def statements_only() -> None:
            with connect(url, NAME) as conn:
                for name in views:
                    if not refresh_in_place(conn, models[name]):
                        raise RuntimeError(f"{name} was not refreshed in place: its definition is not the manifest's")

        seconds = interleaved(
            {
                "in_place": lambda: refresh_together(due, url, PROJECT_ROOT),
                "dbt_run": lambda: run_dbt_refresh(views, url, PROJECT_ROOT),
                "statements": statements_only,
            },
            max(ctx.repeat, 3),
        )
        rows = view_rows(url, views)
    details = {
        "seconds": seconds,
        "views": views,
        "view_rows": rows,
        "syncs": [s.name for s in specs],
        "orders": data.orders,
    }
    statements = min(seconds["statements"])
    return [
        Result(NAME, f"seconds, refresh of the demo's {len(views)} serving views after its replace syncs",
               min(seconds["in_place"]), "s", min(seconds["dbt_run"]),
               "one `dbt run --target postgres --select <views>` per invocation (before)", "<= 2 s",
               note=f"the REFRESH statements alone: {statements:.2f} s", details=details),
    ]  # fmt: skip


def check_refreshes_rows(conn: object, refresh: object) -> None:
    """One refresh after a change to an export table serves the change (and the change is undone)."""
    execute = conn.execute  # type: ignore[attr-defined]
    code = execute("select min(iris_code) from marts.iris_zones").fetchone()[0]
    execute("update marts.iris_zones set commune_name = commune_name || ' (bench)' where iris_code = %s", (code,))
    try:
        started = time.perf_counter()
        refresh()  # type: ignore[operator]
        served = execute("select commune_name from serving.iris_zones_mv where iris_code = %s", (code,)).fetchone()[0]
        if not served.endswith(" (bench)"):
            raise RuntimeError(f"the refresh ({time.perf_counter() - started:.2f} s) did not serve the changed row")
    finally:
        execute("update marts.iris_zones set commune_name = left(commune_name, -8) where iris_code = %s", (code,))
        refresh()  # type: ignore[operator]


def view_rows(url: str, views: list[str]) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {v: conn.execute(f'select count(*) from serving."{v}"').fetchone()[0] for v in views}  # type: ignore[index]
