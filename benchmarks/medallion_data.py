"""The sample marketplace at a given number of orders, loaded into a DuckDB warehouse.

Shared by the dbt and Spark benchmarks: generate (users, catalog in Postgres, order and click
files; clicks scaled like orders, users a tenth of them), run the three loaders, load the seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.core import Context, environment
from roundtrip.dev.sample_data import SampleConfig, generate


@dataclass
class Medallion:
    orders: int
    folder: Path
    env: dict[str, str]  # what loaders, dbt and spark_jobs read

    @property
    def warehouse(self) -> Path:
        return Path(self.env["ROUNDTRIP_DUCKDB_PATH"])


def prepare(ctx: Context, orders: int, name: str, cfg: SampleConfig | None = None) -> Medallion:
    """``orders`` orders (users a tenth, as many clicks), or exactly ``cfg`` when given."""
    pg = ctx.postgres()
    folder = ctx.path(name)
    database = f"bench_{name}".replace("-", "_")
    import psycopg

    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{database}" with (force)')
        conn.execute(f'create database "{database}"')
    url = pg.url(database)
    env = {
        "ROUNDTRIP_DATA_DIR": str(folder),
        "ROUNDTRIP_DUCKDB_PATH": str(folder / "warehouse.duckdb"),
        "ROUNDTRIP_APP_DB": str(folder / "app.db"),
        "ROUNDTRIP_LANDING_PATH": str(folder / "landing"),
        "ROUNDTRIP_CATALOG_URL": url,
        "ROUNDTRIP_POSTGRES_URL": url,
        "ROUNDTRIP_SPARK_OUTPUT": str(folder / "spark"),
        "DBT_TARGET_PATH": str(folder / "target"),
        "ROUNDTRIP_TARGET": "duckdb",
        **pg.dbt_env(),
        "ROUNDTRIP_PG_DATABASE": database,
    }
    cfg = cfg or SampleConfig(users=max(1_000, orders // 10), orders=orders, clicks=orders)
    generate(cfg, folder / "app.db", folder / "landing", url)
    load_and_seed(env, folder)
    return Medallion(cfg.orders, folder, env)


def load_and_seed(env: dict[str, str], folder: Path) -> None:
    """Every loader into the DuckDB warehouse of ``env`` (bronze), then ``dbt seed``."""
    from loaders import jobs
    from loaders.config import load_config
    from loaders.warehouse import open_warehouse
    from roundtrip.core.dbt import run_dbt

    with environment(**env):
        warehouse = open_warehouse("duckdb")
        try:
            jobs.load_all(load_config(), warehouse)
        finally:
            warehouse.close()
        run_dbt(["seed"], target="duckdb", target_path=folder / "target", quiet=True)
