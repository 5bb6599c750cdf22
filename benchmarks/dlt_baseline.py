"""SQLite -> DuckDB: roundtrip's SQLite loader against dlt, the peer users would pick.

The app's ``users`` table (the sample generator's: ``size`` rows, NULLs, timestamps as REAL and
INTEGER epoch seconds and ISO text) is loaded by both into a DuckDB file of their own, each
merging on the same primary key and incremental by the same cursor (dlt: its ``sql_database``
source, ``sql_table`` with the pyarrow backend, ``incremental("updated_at")``, write disposition
``merge``). Measured, interleaved, on a fresh copy of the data each repetition:
- the full load (an empty warehouse, no watermark);
- the incremental load after 1 % of the rows changed with a newer ``updated_at``.
After each load both warehouses must hold the same rows (``compare``): roundtrip converts the
timestamps as ``loaders.yml`` says, dlt keeps SQLite's numbers and text, so dlt's side is
converted the same way in SQL before the rows are compared, NULLs included. A difference raises:
no figure is reported for loads that do not agree.

dlt is the ``bench`` extra of pyproject.toml (``make bench`` installs it).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from benchmarks.core import Context, Result, environment, human, timed
from loaders import jobs
from loaders.config import SqliteSourceConfig, load_config
from loaders.sources.sqlite import read_schema
from loaders.warehouse.duckdb import DuckDBWarehouse
from roundtrip.core.sql import quote
from roundtrip.dev.sample_data import SampleConfig, generate

NAME = "dlt_baseline"
SCHEMA = "raw_app"
CHANGED_SHARE = 100  # one row in CHANGED_SHARE changes before the incremental load
# dlt's own environment: no usage events, its state under the run's folder
DLT_ENV = {"RUNTIME__DLTHUB_TELEMETRY": "false", "RUNTIME__LOG_LEVEL": "ERROR"}


def users_source(path: Path) -> SqliteSourceConfig:
    app = load_config().sqlite["app"]
    return app.model_copy(update={"path": str(path), "target_schema": SCHEMA})


def roundtrip_load(source: SqliteSourceConfig, warehouse_path: Path) -> jobs.TableReport:
    warehouse = DuckDBWarehouse(warehouse_path)
    try:
        [report] = jobs.load_sqlite("app", source, warehouse)
    finally:
        warehouse.close()
    return report


def dlt_load(source: SqliteSourceConfig, warehouse_path: Path, pipelines_dir: Path) -> None:
    """One run of the dlt pipeline: full the first time, incremental by its stored state after."""
    import dlt
    from dlt.sources.sql_database import sql_table

    table = source.tables[0]
    if table.cursor is None:
        raise RuntimeError(f"dlt_baseline: {table.name} needs a cursor column for dlt's incremental load")
    resource = sql_table(
        credentials=f"sqlite:///{source.path}",
        table=table.name,
        backend="pyarrow",
        incremental=dlt.sources.incremental(table.cursor),
        primary_key=table.primary_key,
        write_disposition="merge",
    )
    pipeline = dlt.pipeline(
        pipeline_name="users",
        destination=dlt.destinations.duckdb(str(warehouse_path)),
        dataset_name=SCHEMA,
        pipelines_dir=str(pipelines_dir),
    )
    pipeline.run(resource)


def change_rows(path: Path, cursor: str, key: str) -> int:
    """1 % of the rows get a newer cursor, a new name and (every other one) a NULL email."""
    with sqlite3.connect(path) as con:
        (newest,) = con.execute(f"select max({quote(cursor)}) from users").fetchone()
        changed = con.execute(
            f"update users set {quote(cursor)} = ? + 60, display_name = display_name || ' (moved)', "
            f"email = case when {quote(key)} % {2 * CHANGED_SHARE} = 0 then null else email end "
            f"where {quote(key)} % {CHANGED_SHARE} = 0",
            [newest],
        ).rowcount
    return int(changed)


def _normalised(source: SqliteSourceConfig, columns: list[str], side: str) -> str:
    """One side's rows with every value comparable: roundtrip's timestamps as epoch microseconds,
    dlt's SQLite numbers and ISO text converted to the same."""
    kinds = source.tables[0].timestamps
    shown = []
    for name in columns:
        column, kind = quote(name), kinds.get(name)
        if kind is None:
            shown.append(column)
        elif side == "roundtrip":
            shown.append(f"epoch_us({column})")
        elif kind == "iso":
            shown.append(f"epoch_us(cast({column} as timestamptz))")
        else:  # epoch_s, epoch_ms; the sample's values have at most microseconds: exact in a double
            shown.append(f"cast(round({column} * {1_000_000 if kind == 'epoch_s' else 1_000}) as bigint)")
    return ", ".join(f"{expr} as {quote(name)}" for expr, name in zip(shown, columns))


def compare(source: SqliteSourceConfig, roundtrip_db: Path, dlt_db: Path, expected_rows: int) -> None:
    """Both warehouses hold the same rows (as multisets), and as many as the source; else raise."""
    import duckdb

    with sqlite3.connect(source.path) as app:
        columns = [c.name for c in read_schema(app, source.tables[0].name)]
    relation = f"{SCHEMA}.{quote(source.tables[0].name)}"
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute(f"attach '{roundtrip_db}' as rt (read_only)")
        con.execute(f"attach '{dlt_db}' as dl (read_only)")
        ours = f"select {_normalised(source, columns, 'roundtrip')} from rt.{relation}"
        theirs = f"select {_normalised(source, columns, 'dlt')} from dl.{relation}"
        counts = con.execute(f"select (select count(*) from ({ours})), (select count(*) from ({theirs}))").fetchone()
        only_ours = con.execute(f"{ours} except all {theirs} limit 3").fetchall()
        only_theirs = con.execute(f"{theirs} except all {ours} limit 3").fetchall()
    finally:
        con.close()
    if counts != (expected_rows, expected_rows) or only_ours or only_theirs:
        raise RuntimeError(
            f"{NAME}: the warehouses differ: rows (roundtrip, dlt) {counts}, source {expected_rows}; "
            f"only in roundtrip's {only_ours}; only in dlt's {only_theirs}"
        )


def _one_repetition(pristine: Path, folder: Path, n: int, dlt_first: bool) -> dict[str, Any]:
    """Full loads, comparison, 1 % change, incremental loads, comparison; seconds of each."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    app_db = folder / "app.db"
    shutil.copyfile(pristine, app_db)
    source = users_source(app_db)
    table = source.tables[0]
    ours, theirs, pipelines = folder / "roundtrip.duckdb", folder / "dlt.duckdb", folder / "dlt_pipelines"
    seconds: dict[str, float] = {}

    def both(phase: str, expect_ours: dict[str, int]) -> None:
        runs = [
            ("dlt", lambda: dlt_load(source, theirs, pipelines)),
            ("roundtrip", lambda: roundtrip_load(source, ours)),
        ]
        for who, fn in runs if dlt_first else runs[::-1]:
            took, out = timed(fn)
            seconds[f"{who}_{phase}"] = took
            if who == "roundtrip":
                got = {k: getattr(out.result, k) for k in expect_ours}
                if got != expect_ours:
                    raise RuntimeError(f"{NAME}: roundtrip's {phase} load counted {got}, expected {expect_ours}")
        compare(source, ours, theirs, n)

    both("full", {"inserted": n, "updated": 0})
    changed = change_rows(app_db, table.cursor or "", table.primary_key[0])
    both("incremental", {"inserted": 0, "updated": changed})
    seconds["changed"] = changed
    return seconds


def run(ctx: Context) -> list[Result]:
    n = ctx.size
    folder = ctx.path(NAME)
    pristine = folder / "app.db"
    generate(SampleConfig(users=n, items=100, orders=100, clicks=100), pristine, folder / "landing", None)
    with environment(**DLT_ENV):
        import dlt  # noqa: F401  (imported before the clock starts, as roundtrip's modules are)
        from dlt.sources.sql_database import sql_table  # noqa: F401

        reps = [_one_repetition(pristine, folder / f"rep{i}", n, dlt_first=i % 2 == 0) for i in range(ctx.repeat)]
    best = {k: min(r[k] for r in reps) for k in reps[0]}
    changed = int(best["changed"])
    details = {"repetitions": reps}
    return [
        Result(NAME, f"rows/s, full load of {human(n)} users into DuckDB", n / best["roundtrip_full"], "rows/s",
               n / best["dlt_full"], "dlt sql_table (pyarrow) merge", ">= 1.2",
               note="identical rows in both warehouses", details=details),
        Result(NAME, f"changed rows/s, incremental after {human(changed)} changed ({100 // CHANGED_SHARE} %)",
               changed / best["roundtrip_incremental"], "rows/s", changed / best["dlt_incremental"],
               "dlt incremental merge", ">= 2", note="identical rows in both warehouses"),
    ]  # fmt: skip
